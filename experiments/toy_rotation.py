"""Paper 001, section 5.1 (appendix B.4, Figs. 1-2): learning a rotational invariance on a toy.

N = 200 points on two arcs made by rotating a jittered base direction (0 or 180 degrees)
about the origin by U[-60, 60] degrees: a soft +-60 degree rotational invariance, with empty
gaps of 60 degrees between the arcs. Two classes: within an arc the label is the radius band
(r in [0.5, 1.25) or [1.25, 2]), and the assignment flips from one arc to the other
(:func:`ella.data.rotation_toy`; training draw with the run's seed, 2000 test points with seed
+ 1). The network is an MLP 2-50-2 with one tanh hidden layer and one prior precision for all
its parameters (appendix B.4); the invariant model averages its logits over S rotations by
``eps * eta``, eps ~ U[-1, 1] (:class:`ella.invariance.PointRotation`,
:class:`ella.invariance.InvariantModel`), with eta = 0 at the start. Cases:

* ``no_invariance``: eta fixed at 0 (one draw), prior precision by the marginal likelihood;
* ``augerino``: eta by the training loss minus 0.01 ||eta||^2, weight decay 1e-4;
* ``lila_full``: eta and the prior precision by the full-GGN Laplace marginal likelihood
  (eq. 17), differentiated through one full-batch graph;
* ``lila_kron``: the same with the augmented KFAC (section 4.2, eq. 19).

All train 500 full-batch Adam steps (lr 0.1, cosine), every step followed by one step on eta
(Adam, lr 0.02 cosine-decayed to 1e-4) and on the log prior precision (lr 0.1), with S = 50
draws in training. Two departures from appendix B.4 (lr_eta 0.005, S = 100), both measured
(issue 15): with lr 0.005 Adam moves eta by at most sum(lr) = 1.28 rad = 73 degrees in 500
steps, and on seed 0 eta was still rising when the schedule ended (52 and 56 degrees); with
0.02 every seed's eta is flat by step 300 (``eta_trajectory.png``). S = 50 halves the cost
(the fits are linear in S) to keep five seeds within the budget below. Evaluation keeps
S = 100. Metrics: ``learned_angle_deg`` (|eta| in degrees, final), ``neg_log_marglik`` (the
full-GGN Laplace ``-log p(D | delta, eta)`` of the final model for every case, on S = 100
fixed draws, at the one prior precision that maximises it: comparable across cases),
``test_acc`` (%, f_hat with S = 100 fresh draws).

``--seeds N`` (default 5) runs seeds seed .. seed + N - 1 (data, initialisation and draws);
results.json keeps the first seed's metrics under today's keys, every seed's under
``seeds``, and ``{metric}_mean`` / ``{metric}_std`` (ddof 1) per case, with the targets of
issue 15 at the top level (``targets``): lila_full and lila_kron within 15 degrees of 60 on
average, and a lila case with the best marginal likelihood of the four on every seed.
Budget (default run, 5 seeds, ``--threads 1``, this 2-core CPU): 336 s wall, 331 s of CPU
time (``timings.total_cpu_s``; about 65 s per seed, 50-60 s of it the two lila cases;
measured with one other one-thread job on the second core). Measured
(issue 15, seeds 0-4): lila_full 48.2 +- 14.5 degrees, lila_kron 52.7 +- 14.8; a lila case
has the best marginal likelihood on 4 of 5 seeds (seed 1: augerino 44.88 against lila_full
45.75; per-layer precisions instead of one: 44.8 +- 13.4 and 49.0 +- 15.9 degrees, 3 of 5).
The spread is the data draw's and the initialisation's, not the optimiser's: eta settles on
a plateau, and on seed 2 (29 and 32 degrees) weights trained at a fixed eta of 15, 30, 45,
60, 75 degrees reach -log ML 57.1, 55.2, 56.9, 54.7, 54.9: flat within the 1-2 nats that
separate training runs. Writes ``results.json``, ``decision_boundaries.png`` (Figs. 1-2,
first seed: predicted classes and the learned extent) and ``eta_trajectory.png`` (|eta| per
case, one line per seed). Usage::

    python experiments/toy_rotation.py --out results/toy_rotation [--seed 0] [--seeds 5]
        [--quick] [--executor {sequential,local,slurm} --workers N --slurm-partition P ...]

One job per case and seed (``experiments/_grid.py``: here, or on Slurm through submitit); the
timings are the jobs' own wall times (``<case>_s``: the first seed's; ``seed<N>_s``: a seed's
cases), ``total_s`` the run's wall time and ``total_cpu_s`` the jobs' CPU time.
"""

from __future__ import annotations

import json
import logging
import math
import time

import torch
from torch import nn

from _cli import add_grid_flags, grid_options, parser, run_config, setup
from _grid import run_grid
from _results import check_targets, mean_std, write_results
from ella import plot
from ella.data import rotation_toy
from ella.invariance import (
    InvarianceConfig,
    InvariantModel,
    PointRotation,
    invariant_laplace,
    train_invariant,
)
from ella.laplace import optimize_prior_precision, share_prior
from ella.marglik import MarglikConfig

CASES = ("no_invariance", "augerino", "lila_full", "lila_kron")
N_CLASSES = 2
TRUE_ANGLE_DEG = 60.0
SUMMARY = ("learned_angle_deg", "neg_log_marglik", "test_acc")
QUICK = dict(n_train=40, n_test=100, steps=4, n_samples=6, eval_samples=6, lr_eta=0.02)
DEFAULT = dict(n_train=200, n_test=2000, steps=500, n_samples=50, eval_samples=100, lr_eta=0.02)
log = logging.getLogger("toy_rotation")


def build_model(seed: int, learnable: bool, n_samples: int, device: str = "cpu") -> InvariantModel:
    """MLP 2-50-C (tanh) in float64, one prior group, inside an invariant model with eta = 0."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, N_CLASSES)).double()
    share_prior(net)  # appendix B.4: "a single prior precision in this case"
    aug = PointRotation(dtype=torch.float64, device=device, learnable=learnable)
    return InvariantModel(net.to(device), aug, n_samples)


def best_neg_log_marglik(model: InvariantModel, x, y, n_samples: int, seed: int) -> tuple:
    """Full-GGN ``-log p(D | delta, eta)`` on fixed draws, minimised over one shared delta by a
    grid over log10 delta in [-4, 4] (step 0.1) refined around the best point (step 0.005)."""
    eps = model.augmentation.sample_eps(len(y), n_samples, torch.Generator().manual_seed(seed))
    model.eval()
    la = invariant_laplace(model, [(x, eps, y)], "classification", "full")
    tuned = optimize_prior_precision(la, "grid", bounds=(-4.0, 4.0), step=0.1, refine_step=0.005)
    return -tuned.log_marginal_likelihood, next(iter(tuned.prior_precision.values()))


def run_case(name: str, data, settings: dict, seed: int) -> tuple[dict, InvariantModel, list]:
    x, y, x_te, y_te = data
    s = settings["n_samples"] if name != "no_invariance" else 1
    model = build_model(seed, name != "no_invariance", s, str(x.device))
    config = MarglikConfig(
        epochs=settings["steps"],
        batch_size=len(y),
        lr=0.1,
        lr_hyper=0.1,
        n_hyper_steps=1,
        marglik_every=1,
        burn_in=0,
        structure="kron" if name == "lila_kron" else "full",
        seed=seed,
        progress=settings["progress"],
    )
    method = {"no_invariance": "none", "augerino": "augerino"}.get(name, "lila")
    inv = InvarianceConfig(
        method=method,
        n_samples=s,
        lr_eta=settings["lr_eta"],
        lr_eta_min=1e-4,
        eta_burn_in=0,
        n_eta_steps=1,
        eta_gradient="full",
        eta_batch_size=None,
        seed=seed,
    )
    tic = time.perf_counter()
    result = train_invariant(model, (x, y), config, inv)
    train_s = time.perf_counter() - tic
    model.eval()
    s_eval = settings["eval_samples"] if s > 1 else 1
    nlml, delta = best_neg_log_marglik(model, x, y, s_eval, seed + 7)
    with torch.no_grad():
        out = model(x_te, s_eval, generator=torch.Generator().manual_seed(seed + 11))
    metrics = {
        "learned_angle_deg": math.degrees(abs(result.eta[0])),
        "neg_log_marglik": nlml,
        "test_acc": 100.0 * float((out.argmax(1) == y_te).double().mean()),
        "prior_precision": delta,
        "learned_prior_precision": next(iter(result.precisions.values())),
        "train_s": train_s,
    }
    return metrics, model, result.history


def load_data(settings: dict, seed: int, device: str) -> tuple:
    """``(x, y, x_test, y_test)`` of ``seed``: the training draw with ``seed``, the test draw
    with ``seed + 1``."""
    x, y = rotation_toy(settings["n_train"], seed, max_angle_deg=TRUE_ANGLE_DEG)
    x_te, y_te = rotation_toy(settings["n_test"], seed + 1, max_angle_deg=TRUE_ANGLE_DEG)
    return tuple(t.to(device) for t in (x, y, x_te, y_te))


def run_job(name: str, seed: int, settings: dict, device: str) -> dict:
    """One case on the data draw of one seed (a job of the grid, in any process): ``metrics``,
    ``history``, the trained model's ``state`` (the network's state dict and the learned
    ``eta``, which is not in it; on the CPU), and the job's wall and CPU seconds (``seconds``,
    ``cpu_s``)."""
    tic, cpu = time.perf_counter(), time.process_time()
    metrics, model, history = run_case(name, load_data(settings, seed, device), settings, seed)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "metrics": metrics,
        "history": history,
        "state": state,
        "eta": model.augmentation.eta.detach().cpu(),
        "seconds": time.perf_counter() - tic,
        "cpu_s": time.process_time() - cpu,
    }


def rebuild(name: str, job: dict, settings: dict, seed: int, device: str) -> InvariantModel:
    """The trained model of a job (:func:`run_job`) from its ``state`` and ``eta``."""
    s = settings["n_samples"] if name != "no_invariance" else 1
    model = build_model(seed, name != "no_invariance", s, device)
    model.load_state_dict(job["state"])
    with torch.no_grad():
        model.augmentation.eta.copy_(job["eta"])
    return model.eval()


def summarise(per_seed: dict[int, dict]) -> dict[str, dict]:
    """Per case: the first seed's metrics (today's keys), every seed's under ``seeds``, and the
    mean and standard deviation (ddof 1; 0 for one seed) over seeds of the summary metrics."""
    first = per_seed[min(per_seed)]
    cases = {}
    for name in first:
        runs = {str(seed): metrics[name] for seed, metrics in per_seed.items()}
        cases[name] = dict(first[name])
        for key in SUMMARY:
            mean, std = mean_std([float(r[key]) for r in runs.values()])
            cases[name][f"{key}_mean"], cases[name][f"{key}_std"] = mean, std
        cases[name]["seeds"] = runs
    return cases


def lila_best_seeds(per_seed: dict[int, dict]) -> list[int]:
    """The seeds on which a lila case has the lowest ``neg_log_marglik`` of all cases run."""
    best = []
    for seed, metrics in per_seed.items():
        winner = min(metrics, key=lambda name: metrics[name]["neg_log_marglik"])
        if winner.startswith("lila"):
            best.append(seed)
    return best


def targets(cases: dict, per_seed: dict[int, dict]) -> dict:
    """Issue 15's targets: lila_full and lila_kron within 15 degrees of 60 on average over the
    seeds, and a lila case with the best marginal likelihood of the four on every seed."""
    scores, wanted = {}, {}
    for name in ("lila_full", "lila_kron"):
        if name in cases:
            key = f"{name}_learned_angle_deg_mean"
            scores[key] = cases[name]["learned_angle_deg_mean"]
            wanted[key] = ("within", (TRUE_ANGLE_DEG, 15.0 / TRUE_ANGLE_DEG))
    out = check_targets(scores, wanted)
    if set(CASES) <= set(cases):
        best = lila_best_seeds(per_seed)
        out["lila_best_marglik_seeds"] = {
            "want": f"{len(per_seed)} of {len(per_seed)} seeds",
            "value": len(best),
            "seeds": best,
            "pass": len(best) == len(per_seed),
        }
    for key, value in scores.items():
        out[key]["value"] = value
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--seeds", type=int, default=5, help="run seeds seed .. seed + N - 1")
    add_grid_flags(p)
    args = p.parse_args()
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    options = grid_options(p, args)
    setup(args)
    settings = dict(QUICK if args.quick else DEFAULT)
    settings["progress"] = not args.quick
    seeds = list(range(args.seed, args.seed + args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = {(n, seed): (n, seed, settings, args.device) for seed in seeds for n in args.cases}
    done = run_grid(run_job, jobs, options, desc="toy_rotation")
    per_seed = {seed: {n: done[n, seed]["metrics"] for n in args.cases} for seed in seeds}
    histories = {seed: {n: done[n, seed]["history"] for n in args.cases} for seed in seeds}
    for (n, seed), job in done.items():
        log.info("seed %d, %s: %s", seed, n, job["metrics"])
    # timings: the jobs' own wall times wherever they ran (today's keys: the first seed's
    # cases), the run's wall time, and the jobs' CPU time (the wall time without sharing)
    timings = {f"{n}_s": done[n, seeds[0]]["seconds"] for n in args.cases}
    for seed in seeds:
        timings[f"seed{seed}_s"] = sum(done[n, seed]["seconds"] for n in args.cases)
    timings["total_s"] = time.perf_counter() - start
    timings["total_cpu_s"] = sum(job["cpu_s"] for job in done.values())
    # the figures are drawn here, on the CPU (with --executor slurm there may be no GPU here)
    first_data = load_data(settings, seeds[0], "cpu")
    first_models = {n: rebuild(n, done[n, seeds[0]], settings, seeds[0], "cpu") for n in args.cases}
    cases = summarise(per_seed)
    for name in ("lila_full", "lila_kron"):
        if name not in cases:
            continue
        mean = cases[name]["learned_angle_deg_mean"]
        cases[name]["targets"] = {
            "learned_angle_deg_mean": {
                "want": f"within 15 of {TRUE_ANGLE_DEG}",
                "pass": bool(abs(mean - TRUE_ANGLE_DEG) <= 15.0),
            },
            "neg_log_marglik": {
                "want": "lower than no_invariance and augerino on every seed",
                "pass": all(
                    m[name]["neg_log_marglik"]
                    < min(
                        [m[c]["neg_log_marglik"] for c in ("no_invariance", "augerino") if c in m],
                        default=math.inf,
                    )
                    for m in per_seed.values()
                ),
            },
        }

    x, y = first_data[:2]

    def predictor(model: InvariantModel):
        gen = torch.Generator().manual_seed(seeds[0] + 13)
        return lambda pts: torch.softmax(model(pts, generator=gen), -1)

    first = per_seed[seeds[0]]
    panels = {
        name: {
            "predict": predictor(first_models[name]),
            "angle_deg": first[name]["learned_angle_deg"],
            "subtitle": f"angle {first[name]['learned_angle_deg']:.0f} deg, "
            f"-log ML {first[name]['neg_log_marglik']:.1f}",
        }
        for name in args.cases
    }
    plot.save(
        plot.decision_boundaries(panels, x.cpu(), y.cpu()), args.out / "decision_boundaries.png"
    )
    # one panel per case, one line per seed
    names = tuple(f"seed {s}" for s in seeds)
    runs = {
        name: [
            {
                "epoch": records[0]["epoch"],
                **{f"eta/seed {s}": r["eta/rotate"] for s, r in zip(seeds, records)},
            }
            for records in zip(*(histories[s][name] for s in seeds))
        ]
        for name in args.cases
    }
    reference = {n: dict.fromkeys(names[:1], math.radians(TRUE_ANGLE_DEG)) for n in args.cases}
    plot.save(
        plot.eta_trajectories(runs, names, reference=reference),
        args.out / "eta_trajectory.png",
    )
    config = {
        **run_config(args, seeds),
        "n_classes": N_CLASSES,
        "true_angle_deg": TRUE_ANGLE_DEG,
        "model": "MLP 2-50-2 tanh, float64, one prior precision for all parameters (B.4)",
        "data": "2 arcs (0, 180 deg) of +-60 deg x 2 radius bands, label (band + arc) mod 2; "
        "training draw rotation_toy(n_train, seed), test draw rotation_toy(n_test, seed + 1)",
        "lr": 0.1,
        "lr_hyper": 0.1,
        "lr_eta_min": 1e-4,
        "neg_log_marglik": "full-GGN Laplace on S fixed draws at the final weights and eta, "
        "total over the N training points, at the prior precision that maximises it",
        "test_acc": "percent, f_hat with S fresh draws",
        "summary": "per case: first seed's metrics, per-seed entries under `seeds`, and "
        "`{metric}_mean`, `{metric}_std` (ddof 1) over seeds",
        **{k: v for k, v in settings.items() if k != "progress"},
    }
    path = write_results(args.out, "toy_rotation", config, cases, timings)
    record = json.loads(path.read_text())
    record["targets"] = targets(cases, per_seed)
    path.write_text(json.dumps(record, indent=2))
    for name, case in cases.items():
        log.info(
            "%s: angle %.1f +- %.1f deg, -log ML %.2f +- %.2f, test acc %.2f +- %.2f",
            name,
            *(case[f"{k}_{s}"] for k in SUMMARY for s in ("mean", "std")),
        )
    log.info("targets: %s", record["targets"])
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
