"""What ``latentlab simulate`` costs per step, against its floor, on real trained models of both built-in systems.

For chignolin (r1, r2, cos; closed-form A) and alanine dipeptide (phi, psi; A(Q) from data) a model is
trained with the default settings (or read from ``--models DIR`` when it is there), then, side by side
in one run, at each walker count:

* ``step``: one step of the real path (``Simulation.step``: friction, implicit leapfrog with its
  fixed-point iterations, V + grad V, A + dA/dQ, friction series, bookkeeping), as ``latentlab
  simulate`` runs it;
* ``floor``: one batched evaluation of the same model's V and grad V plus A(Q) and dA/dQ at the walkers'
  positions (the work any integrator of this H must do once per step);
* ``mlp``: a bare 3x128 SiLU MLP's forward + gradient at the same walker count (so that an expensive
  prior cannot hide in the floor).

The three are called in turn (round-robin, each after each of the others equally often) for 3 s, so that all
see the same background load; medians of wall time (what a user waits) and of this thread's CPU time
(``cpu_*``: without the time other processes held the core, the steadier ratio on a shared machine) are
reported.

Usage::

    python benchmarks/bench_simulate.py [--walkers 1024] [--device cpu] [--models DIR] [--out FILE]

Prints a table and writes JSON (default ``benchmarks/results/bench_simulate.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from _common import mlp as bare_mlp

from latentlab.data import load
from latentlab.model import CGModel
from latentlab.simulation import Simulation
from latentlab.training import Trainer

SYSTEMS = ("chignolin", "alanine-dipeptide")


def interleaved(fns, min_time: float = 3.0, max_reps: int = 1000) -> list[tuple[float, float]]:
    """Median wall and CPU (this thread's) seconds per call of each function, called in turn for ``min_time``.

    Round-robin calls put the step, its floor and the bare MLP under the same background load, so their
    ratios hold on a shared machine; the CPU time leaves out the time other processes held the core.  The
    order alternates between ``0, 1, 2, ...`` and ``0, ..., 2, 1`` from round to round, so that each function
    runs after each of the others equally often: what ran just before moves a call's time by a few per cent
    (in one fixed order the step always ran after the bare MLP, which evicts the caches, and the floor always
    after the step, which had just warmed the same model's weights and tables: step / floor 2-3 % higher).
    """
    for fn in fns:
        fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    orders = [list(range(len(fns))), [0] + list(range(len(fns) - 1, 0, -1))]
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < min_time and len(wall[0]) < max_reps:
        for i in orders[rounds % 2]:
            t, tc = time.perf_counter(), time.thread_time()
            fns[i]()
            cpu[i].append(time.thread_time() - tc)
            wall[i].append(time.perf_counter() - t)
        rounds += 1
    return [(sorted(w)[len(w) // 2], sorted(c)[len(c) // 2]) for w, c in zip(wall, cpu)]


def model_for(name: str, models_dir: str | None) -> tuple[CGModel, float]:
    path = os.path.join(models_dir, f"{name}.pt") if models_dir else None
    if path and os.path.exists(path):
        return CGModel.load(path), 0.0
    t0 = time.perf_counter()
    model = Trainer(seed=0, device="cpu").fit(load(name))
    if path:
        os.makedirs(models_dir, exist_ok=True)
        model.save(path)
    return model, time.perf_counter() - t0


def measure(model: CGModel, n_walkers: int, device: str) -> dict:
    sim = Simulation(model, n_walkers=n_walkers, device=device, seed=0)
    sim.step(20)  # leave the data frames
    q = sim.state.Q.clone()
    integ = sim.integrator

    def floor():
        integ._evaluate(q)

    net = bare_mlp(model.n_cg).to(device=device, dtype=torch.float32)
    x = q.to(torch.float32)

    def mlp():
        xr = x.detach().requires_grad_(True)
        torch.autograd.grad(net(xr).sum(), xr)

    (step, step_cpu), (fl, fl_cpu), (bare, bare_cpu) = interleaved([lambda: sim.step(1), floor, mlp])
    return {"walkers": n_walkers, "step_ms": 1e3 * step, "floor_ms": 1e3 * fl, "mlp_ms": 1e3 * bare,
            "step_over_floor": step / fl, "step_over_mlp": step / bare, "walker_steps_per_s": n_walkers / step,
            "cpu_step_ms": 1e3 * step_cpu, "cpu_floor_ms": 1e3 * fl_cpu, "cpu_mlp_ms": 1e3 * bare_cpu,
            "cpu_step_over_floor": step_cpu / fl_cpu, "cpu_step_over_mlp": step_cpu / bare_cpu,
            "fixed_point_iterations": integ.max_iterations}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--walkers", type=int, nargs="+", default=[1024])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=os.path.join("benchmarks", "results", "models"),
                        help="directory to keep/read the trained models (default benchmarks/results/models)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "bench_simulate.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in SYSTEMS:
        model, train_s = model_for(name, args.models)
        for w in args.walkers:
            row = {"system": name, "train_seconds": train_s, "mass_model": model.mass.kind, **measure(model, w, args.device)}
            rows.append(row)
    header = (f"{'system':<18} {'walkers':>7} {'step ms':>8} {'floor ms':>9} {'mlp ms':>7} {'step/floor':>10} {'step/mlp':>9} "
              f"{'walker-steps/s':>15} {'cpu: step/floor':>15} {'step/mlp':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['system']:<18} {r['walkers']:>7} {r['step_ms']:>8.2f} {r['floor_ms']:>9.2f} {r['mlp_ms']:>7.2f} "
              f"{r['step_over_floor']:>10.2f} {r['step_over_mlp']:>9.2f} {r['walker_steps_per_s']:>15.3g} "
              f"{r['cpu_step_over_floor']:>15.2f} {r['cpu_step_over_mlp']:>9.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"rows": rows, "device": args.device, "torch": torch.__version__, "python": platform.python_version(),
                   "threads": torch.get_num_threads(), "load_average": os.getloadavg()}, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
