"""Speed-up of a calibrated CG model over all-atom OpenMM, measured side by side in one run.

For each system (a calibrated model from ``latentlab calibrate --out``, and the reference it was
calibrated against):

* **all-atom**: the project's own ``latentlab generate SYSTEM --ns NS`` on this machine (one
  trajectory, ``--threads 1``, the platform ``auto`` picks), timed by generate itself (its production
  loop, frames saved as in a real run) and as the whole command; transitions between the named basins
  counted in its output at the reference's frame spacing;
* **CG**: :class:`latentlab.simulation.Simulation` of the calibrated model (its friction, its
  calibration time step) with 1 and with 1024 walkers, recording Q at the reference's frame spacing
  (what ``latentlab simulate`` does), transitions counted the same way.

Two figures of merit, per wall-clock second:

* *reference-equivalent ns*: simulated time (all walkers) divided by the model's kinetic time ratio
  ``r`` = model / reference of the calibrated observable, from the calibration's independent check
  run (all-atom: ``r = 1``).  After a good calibration ``r`` is within its error of 1;
* *transitions*: core-to-core transitions between the basins (both directions, counted as
  :func:`latentlab.kinetics.mfpt_direct` counts them).

Usage::

    python benchmarks/bench_speedup.py --model ala-calibrated.pt --reference alanine-dipeptide-fine.h5 \\
        [--system alanine-dipeptide] [--allatom-ns 0.2] [--walkers 1 1024] [--seconds 30] [--out FILE]

Prints a table and writes JSON (default ``benchmarks/results/bench_speedup.json``).  Run it on an
otherwise idle machine for clean numbers; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from latentlab.units import FRICTION_UNITS


def load_average() -> list:
    try:
        return [float(v) for v in os.getloadavg()]
    except OSError:
        return []


def transitions(trajectories, basins, pairs) -> int:
    """Core-to-core transitions (both directions of every pair) in independent trajectories."""
    from latentlab.kinetics import mfpt_direct

    masks = basins.masks(trajectories)
    res = mfpt_direct(masks, trajectories.dt_ps, pairs, n_bootstrap=0)
    return int(sum(v["transitions"] for v in res.values()))


def allatom(system: str, ns: float, save_every: float, seed: int, workdir: str, model, basins, pairs) -> dict:
    """``latentlab generate`` in a subprocess: its loop throughput, the whole command, transitions in its output."""
    from latentlab.data import load
    from latentlab.kinetics import Trajectories

    out = os.path.join(workdir, f"allatom-{system}.h5")
    cmd = ["latentlab", "generate", system, "--ns", str(ns), "--save-every", str(save_every), "--temperature", "300",
           "--seed", str(seed), "--threads", "1", "--no-progress", "--overwrite", "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"all-atom run failed ({' '.join(cmd)}):\n{proc.stderr}")
    log = proc.stdout + proc.stderr
    m = re.search(r"simulated ([\d.]+) ns in ([\d.]+) s \(([\d.]+) ns/day on (\w+)\)", log)
    if not m:
        raise SystemExit(f"could not read the all-atom timing from:\n{log}")
    sim_ns, loop_s, _, plat = float(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4)
    ds = load(out)
    tr = Trajectories.from_dataset(ds, cg_map=model.cg_map(ds))
    n_tr = transitions(tr, basins, pairs)
    return {"kind": "all-atom OpenMM (latentlab generate)", "walkers": 1, "platform": plat, "simulated_ns": sim_ns,
            "wall_seconds": loop_s, "command_seconds": wall, "kinetic_ratio": 1.0,
            "reference_ns_per_second": sim_ns / loop_s, "transitions": n_tr, "transitions_per_second": n_tr / loop_s,
            "command": " ".join(cmd)}


def coarse_grained(model, n_walkers: int, seconds: float, dt: float, record_ps: float, basins, pairs,
                   ratio: float, device: str, seed: int) -> dict:
    """The calibrated model with ``n_walkers`` walkers for about ``seconds`` of wall time."""
    from latentlab.kinetics import Trajectories
    from latentlab.simulation import Simulation, TrajectoryReporter

    every = int(round(record_ps / dt))
    rec = TrajectoryReporter(every=every, energies=False)
    sim = Simulation(model, n_walkers=n_walkers, dt=dt, seed=seed, device=device, reporters=[rec])
    sim.step(every)  # warm-up (tables, first evaluations) outside the timing
    t0 = time.perf_counter()
    sim.run(every * 10)
    per_record = (time.perf_counter() - t0) / 10
    n_records = max(20, int(seconds / max(per_record, 1e-9)))
    rec.Q.clear()
    rec.time.clear()
    t0 = time.perf_counter()
    sim.run(every * n_records)
    wall = time.perf_counter() - t0
    q = torch.stack(rec.Q).numpy()  # (n_records, n_walkers, n_cg)
    tr = Trajectories.from_arrays(q, record_ps, names=model.names, periodic=model.periodic, units=model.units)
    n_tr = transitions(tr, basins, pairs)
    sim_ns = n_records * every * dt * n_walkers / 1000.0
    return {"kind": f"CG latent {sim.dynamics} dynamics (calibrated)", "walkers": n_walkers, "platform": device,
            "simulated_ns": sim_ns, "wall_seconds": wall, "kinetic_ratio": ratio, "gamma": sim.gamma, "dt": dt,
            "gamma_units": FRICTION_UNITS[model.friction_model], "friction_model": model.friction_model,
            "reference_ns_per_second": sim_ns / ratio / wall, "transitions": n_tr,
            "transitions_per_second": n_tr / wall, "problems": sim.problems()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="calibrated model (latentlab calibrate --out)")
    parser.add_argument("--reference", required=True, help="the reference it was calibrated against (basins, spacing)")
    parser.add_argument("--system", default="alanine-dipeptide",
                        help="latentlab generate SYSTEM (default alanine-dipeptide)")
    parser.add_argument("--allatom-ns", type=float, default=0.2, help="ns of the all-atom run (default 0.2)")
    parser.add_argument("--walkers", type=int, nargs="+", default=[1, 1024])
    parser.add_argument("--seconds", type=float, default=30.0, help="wall seconds per CG measurement (default 30)")
    parser.add_argument("--basins", default="auto", help="basins (default: the built-in set of the coordinates)")
    parser.add_argument("--pairs", default=None,
                        help="pairs counted, e.g. C5<->C7eq (default: those of the calibration)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/bench_speedup.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from latentlab.cli.calibrate import load_reference
    from latentlab.kinetics.basins import resolve_basins
    from latentlab.kinetics.targets import mfpt_pairs
    from latentlab.model import CGModel

    model = CGModel.load(args.model)
    cal = model.training.get("calibration")
    if model.friction is None or not cal:
        raise SystemExit(f"{args.model} has no calibrated friction: run 'latentlab calibrate ... --out' first")
    ref = load_reference(args.reference, model)
    basins = resolve_basins(args.basins, ref)
    if basins is None:
        raise SystemExit("no basins for these coordinates: pass --basins")
    if args.pairs:
        pairs = mfpt_pairs(args.pairs.split(","), basins.names, {})
    elif cal["target"]["kind"] == "mfpt":
        pairs = [tuple(k.split("->")) for k in cal["target"]["observables"]]
    else:
        pairs = [(basins.names[0], basins.names[1]), (basins.names[1], basins.names[0])]
    used = [r for r in (cal.get("check") or {}).get("rows", []) if r["used"] and r["ratio"]]
    ratio = float(np.exp(np.mean([np.log(r["ratio"]) for r in used]))) if used else 1.0
    dt = float(cal["settings"]["dt"])

    rows = []
    with tempfile.TemporaryDirectory() as work:
        rows.append(allatom(args.system, args.allatom_ns, ref.dt_ps, args.seed, work, model, basins, pairs))
        for w in args.walkers:
            rows.append(coarse_grained(model, w, args.seconds, dt, ref.dt_ps, basins, pairs, ratio, args.device,
                                       args.seed))
    base = rows[0]
    for r in rows:
        r["speedup_reference_ns"] = r["reference_ns_per_second"] / base["reference_ns_per_second"]
        r["speedup_transitions"] = (r["transitions_per_second"] / base["transitions_per_second"]
                                    if base["transitions_per_second"] > 0 else None)

    print(f"{args.system}: {model.dynamics} dynamics, friction {model.friction:.4g} {FRICTION_UNITS[model.friction_model]}, kinetic ratio model/reference {ratio:.3f} "
          f"(calibration check), pairs {', '.join(a + '->' + b for a, b in pairs)}; load {load_average()}")
    print(f"{'run':40s} {'walkers':>7s} {'ref-equiv ns/s':>15s} {'x all-atom':>10s} {'transitions/s':>14s} "
          f"{'x all-atom':>10s}")
    for r in rows:
        st = "-" if r["speedup_transitions"] is None else f"{r['speedup_transitions']:.3g}"
        print(f"{r['kind']:40s} {r['walkers']:7d} {r['reference_ns_per_second']:15.4g} "
              f"{r['speedup_reference_ns']:10.3g} {r['transitions_per_second']:14.4g} {st:>10s}")
    out = {"system": args.system, "model": args.model, "reference": args.reference, "friction": model.friction,
           "kinetic_ratio": ratio, "pairs": [list(p) for p in pairs], "rows": rows, "torch": str(torch.__version__),
           "python": platform.python_version(), "threads": 1, "cpu_count": os.cpu_count(),
           "load_average": load_average(), "argv": sys.argv[1:]}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
