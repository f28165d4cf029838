"""Data-free flows: the figures of docs/flows.md, measured in one run.

Usage::

    python benchmarks/bench_flows.py [--systems double-well,gaussian-mixture,gaussian-mixture-20d,alanine-dipeptide]
                                     [--samples N] [--device cpu] [--threads 1] [--out FILE] [--keep DIR] [--quick]

For each system: train a flow with the system's defaults (exactly what
``latentlab flow train SYSTEM`` does, seed 0), then draw samples (100,000 for
the analytic systems, 200,000 for alanine dipeptide) and report the
reweighted state populations against the exact values (analytic systems) or
the built-in 300 K reference (alanine dipeptide, standard errors from 25 time
blocks), the Kish ESS, the bond score (molecules), the correlation of the
slow latent with x1 (double well), steps, batch and wall time.  The load
average of the machine is recorded before and after each training: other
work on the same cores slows everything down.

Also, side by side in one run: energy + forces of 1000 alanine-dipeptide
frames with :class:`~latentlab.energies.AmberEnergy` (torch, float64 and
float32) and with :class:`~latentlab.energies.OpenMMEnergy` (Reference
platform), and the time of one training step.

Prints a table and writes JSON (default ``benchmarks/results/bench_flows.json``);
trained flows go to ``--keep`` (default ``benchmarks/results/flows/``) so
``latentlab flow report`` can be re-run on them.  ``--quick`` trains each
analytic system for a few hundred steps only (a smoke test, not the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latentlab.flows import (SYSTEMS, FlowTrainer, flow_report, get_system, make_flow, save_flow,  # noqa: E402
                             train_settings, trained_from_trainer)

HERE = os.path.dirname(os.path.abspath(__file__))


def energy_throughput(n_frames: int = 1000) -> dict:
    """Seconds for U and F of ``n_frames`` alanine frames: torch (float64, float32) vs the OpenMM bridge."""
    from latentlab.data import load
    from latentlab.energies import AmberEnergy, OpenMMEnergy

    system = get_system("alanine-dipeptide")
    x = torch.as_tensor(load("alanine-dipeptide").positions[:n_frames], dtype=torch.float64)
    amber = AmberEnergy.from_system(system.openmm_system)
    bridge = OpenMMEnergy(system.openmm_system)
    out = {}
    for name, energy, xx in (("torch_float64", amber, x), ("torch_float32", amber, x.float()),
                             ("openmm_reference", bridge, x)):
        energy.energy_and_forces(xx[:10])
        times = []
        for _ in range(3):
            t = time.perf_counter()
            energy.energy_and_forces(xx)
            times.append(time.perf_counter() - t)
        out[name] = min(times)
    return out


def step_time(system, settings, flow, reps: int = 20) -> float:
    """Median seconds of one training step (sample, energy, loss, backward, Adam)."""
    trainer = FlowTrainer(flow, system, settings)
    trainer._step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        trainer._step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_system(name: str, n_samples: int, device: str, keep: str, quick: bool) -> dict:
    system = get_system(name)
    overrides = dict(seed=0)
    if quick:
        overrides.update(initial_steps=200, steps=20, delta_beta=0.5)
    settings = train_settings(system, **overrides)
    torch.manual_seed(0)
    flow = make_flow(system)
    load_before = os.getloadavg()
    trainer = FlowTrainer(flow, system, settings, device=device)
    t = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t
    load_after = os.getloadavg()
    trained = trained_from_trainer(trainer)
    os.makedirs(keep, exist_ok=True)
    path = os.path.join(keep, f"{name}.pt")
    save_flow(path, trained)
    samples = trained.sample(n_samples, seed=1)
    rep = flow_report(trained, samples=samples)
    rep.update(wall_seconds=wall, load_before=list(load_before), load_after=list(load_after), flow_file=path,
               settings={k: getattr(settings, k) for k in ("batch", "initial_steps", "steps", "lr", "beta0",
                                                         "delta_beta", "delta_kl", "tempering")},
               step_seconds=step_time(system, settings, make_flow(system).to(device)))
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--samples", type=int, default=None, help="samples per report (default 100000; 200000 for alanine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_flows.json"))
    p.add_argument("--keep", default=os.path.join(HERE, "results", "flows"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems {unknown}; use {', '.join(SYSTEMS)}")
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                           "cpu_count": os.cpu_count(), "device": args.device}, "systems": {}}
    if "alanine-dipeptide" in names:
        results["energy_throughput_1000_frames_s"] = energy_throughput()
    for name in names:
        n = args.samples or (200000 if name == "alanine-dipeptide" else 100000)
        if args.quick:
            n = min(n, 20000)
        results["systems"][name] = run_system(name, n, args.device, args.keep, args.quick)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    if "energy_throughput_1000_frames_s" in results:
        print("energy + forces of 1000 alanine frames:",
              ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in results["energy_throughput_1000_frames_s"].items()))
    header = f"{'system':<22}{'steps':>7}{'batch':>7}{'train s':>9}{'load':>6}{'ESS':>8}  populations (value +- se vs target, z)"
    print(header)
    print("-" * len(header))
    for name, r in results["systems"].items():
        pops = "; ".join(f"{k} {e['value']:.4f}+-{e['stderr']:.4f} vs {e.get('exact', e.get('reference')):.4f} "
                         f"({e['z']:+.1f})" for k, e in r["populations"].items())
        load = np.mean([r["load_before"][0], r["load_after"][0]])
        extra = f"; bond score {r['bond_score']:.4f}" if "bond_score" in r else ""
        extra += f"; corr(z,x1) {r['corr_z_x1']:+.3f}" if "corr_z_x1" in r else ""
        print(f"{name:<22}{r['steps']:>7}{r['batch']:>7}{r['train_seconds']:>9.0f}{load:>6.1f}{r['ess_fraction']:>8.3f}  "
              f"{pops}{extra}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
