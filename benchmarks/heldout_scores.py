"""Held-out scores of the training objectives: the numbers behind the README's results table.

For each built-in system (chignolin: r1, r2, cos; alanine dipeptide: phi, psi), each objective
(force matching; force matching refined by relative entropy on the grid; force matching of the eq. 9
potential of Bruce et al.) and each seed, a model is trained on the first 80 % of the trajectory
(``holdout=0.2``: the last 20 % is never trained or validated on), run with latent Langevin (the
defaults of ``latentlab simulate``: 2 fs, gamma auto) and scored against the held-out 20 % with
``latentlab compare``'s rule (JS divergence over the noise floor of the held-out frames; first quarter of
the records dropped).  A perfect model scores about 1/4 (see ``latentlab.compare``).

Usage::

    python benchmarks/heldout_scores.py [--seeds 0 1 2 3 4] [--walkers 500] [--steps 5000] [--out FILE]

Prints a table (mean and spread over seeds) and writes JSON (default ``benchmarks/results/heldout_scores.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from _common import write_results

from latentlab.compare import compare_latent, scoring_frames
from latentlab.data import load
from latentlab.simulation import Simulation, TrajectoryReporter
from latentlab.training import ForceMatching, RelativeEntropy, Trainer

SYSTEMS = ("chignolin", "alanine-dipeptide")
OBJECTIVES = ("force-matching", "force-matching + relative-entropy", "eq9 force-matching")


def train(objective: str, ds, seed: int, holdout: float):
    if objective == "eq9 force-matching":
        return Trainer(ForceMatching(convention="eq9"), seed=seed, holdout=holdout, device="cpu").fit(ds)
    model = Trainer(ForceMatching(), seed=seed, holdout=holdout, device="cpu").fit(ds)
    if objective == "force-matching":
        return model
    return Trainer(RelativeEntropy(estimator="grid", start=model), seed=seed, holdout=holdout, device="cpu").fit(ds)


def score(model, ds, walkers: int, steps: int, seed: int, record_every: int = 10) -> dict:
    recorder = TrajectoryReporter(record_every, energies=False)
    sim = Simulation(model, n_walkers=walkers, seed=seed, reporters=[recorder])
    sim.run(steps)
    q = recorder.record()["Q"].numpy()
    q = q[q.shape[0] // 4:].reshape(-1, model.n_cg)
    frames, info = scoring_frames(model.training["frames"], ds, "holdout")
    cg_map = model.cg_map()
    ref = cg_map.map_frames(ds.positions[frames]).numpy()
    out = compare_latent(q, ref, names=cg_map.names, periodic=cg_map.periodic)
    return {"ratio": out["ratio"], "js_divergence": out["js_divergence"], "js_noise_floor": out["js_noise_floor"],
            "wasserstein": out["wasserstein"], **info, "problems": sim.problems()}


def train_and_score(fit, ds, seed: int, walkers: int, steps: int) -> tuple:
    """``fit()`` a model, then :func:`score` it; returns ``(model, row)`` with the train and simulate seconds."""
    t0 = time.perf_counter()
    model = fit()
    t1 = time.perf_counter()
    row = {"train_seconds": t1 - t0, **score(model, ds, walkers, steps, seed)}
    return model, {**row, "simulate_seconds": time.perf_counter() - t1}


def add_protocol_options(parser, name: str) -> None:
    """The options of this scoring protocol (also bench_bare_import's): ``--walkers``, ``--steps`` of the latent
    Langevin run, the ``--holdout`` fraction, and ``--out`` (default ``benchmarks/results/NAME.json``)."""
    parser.add_argument("--walkers", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", f"{name}.json"))


def save_rows(rows: list, args) -> str:
    """Write the scored rows with the run's settings and the load average as JSON to ``args.out``."""
    return write_results({"rows": rows, "settings": vars(args), "load_average": os.getloadavg()}, args.out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    add_protocol_options(parser, "heldout_scores")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    if os.path.exists(args.out):  # resume: keep what was measured
        rows = json.load(open(args.out))["rows"]
    done = {(r["system"], r["objective"], r["seed"]) for r in rows}
    for name in args.systems:
        ds = load(name)
        for objective in args.objectives:
            for seed in args.seeds:
                if (name, objective, seed) in done:
                    continue
                _, scored = train_and_score(lambda: train(objective, ds, seed, args.holdout), ds, seed, args.walkers,
                                            args.steps)
                row = {"system": name, "objective": objective, "seed": seed, **scored}
                rows.append(row)
                print(f"{name:18s} {objective:34s} seed {seed}: ratio {row['ratio']:.3f} "
                      f"(train {row['train_seconds']:.0f} s, simulate {row['simulate_seconds']:.0f} s)", flush=True)
                save_rows(rows, args)
    print()
    print(f"{'system':<18} {'objective':<34} {'seeds':>5} {'ratio mean':>10} {'min':>6} {'max':>6}")
    for name in args.systems:
        for objective in args.objectives:
            r = np.array([x["ratio"] for x in rows if x["system"] == name and x["objective"] == objective])
            if len(r):
                print(f"{name:<18} {objective:<34} {len(r):>5} {r.mean():>10.3f} {r.min():>6.3f} {r.max():>6.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
