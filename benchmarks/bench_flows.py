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

``--umbrella`` adds an independent reference for alanine dipeptide at 300 K:
umbrella sampling along phi with OpenMM (the same System; 36 windows 10 deg
apart, harmonic bias 0.02 kJ/mol/deg^2 on the periodic difference, 20 ps
equilibration + 200 ps per window, Langevin 1 fs, friction 1/ps), unbiased
with the self-consistent MBAR/WHAM equations; standard errors from 5 time
blocks of every window.  Unlike the 100 ns built-in trajectory it crosses
phi = 0 freely, so it says how much weight phi > 0 really has.

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
from _common import write_results

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


def mbar_weights(u_kn: np.ndarray, n_k: np.ndarray) -> np.ndarray:
    """Unbiased weights (sum 1) of pooled frames from K biased runs (MBAR = WHAM without bins).

    ``u_kn``: reduced bias energy of frame n in state k, shape (K, N); ``n_k``: frames per state.
    Solves for the free energies ``f`` by minimising the convex function
    ``sum_n log sum_k N_k exp(f_k - u_kn) - sum_k N_k f_k`` (Shirts & Chodera, J. Chem. Phys. 129, 124105, 2008).
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    log_n = np.log(np.maximum(n_k, 1e-300))

    def objective(g):
        f = np.r_[0.0, g]
        a = log_n[:, None] + f[:, None] - u_kn
        log_den = logsumexp(a, axis=0)
        grad = (np.exp(a - log_den[None]).sum(1) - n_k)[1:]
        return log_den.sum() - (n_k * f).sum(), grad

    res = minimize(objective, np.zeros(len(n_k) - 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-10})
    f = np.r_[0.0, res.x]
    log_w = -logsumexp(log_n[:, None] + f[:, None] - u_kn, axis=0)
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def umbrella_reference(ps_per_window: float = 200.0, n_windows: int = 36, k_deg: float = 0.02, seed: int = 0,
                       n_blocks: int = 5, frames_file: str | None = None) -> dict:
    """Populations of C5, C7eq, alpha_R, phi>0 at 300 K from umbrella sampling along phi (see the module docstring)."""
    import math

    import openmm
    import openmm.unit as u

    system = get_system("alanine-dipeptide")
    phi_atoms, psi_atoms = system.phi_atoms, system.psi_atoms
    kt = system.kT
    k_rad = k_deg * (180.0 / math.pi) ** 2  # kJ/mol/rad^2
    centers = np.radians(np.arange(n_windows) * 360.0 / n_windows - 180.0)
    frames_phi, frames_psi, window_of = [], [], []
    t0 = time.perf_counter()
    if frames_file and os.path.exists(frames_file):  # reuse the frames of an earlier run
        saved = np.load(frames_file)
        frames_phi, frames_psi, window_of = list(saved["phi"]), list(saved["psi"]), list(saved["window"])
        centers = saved["centers"]
    for w, c in enumerate(centers if not window_of else []):
        omm = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system.openmm_system))
        bias = openmm.CustomTorsionForce("0.5*k*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - c); pi = 3.141592653589793")
        bias.addGlobalParameter("k", k_rad)
        bias.addGlobalParameter("c", float(c))
        bias.addTorsion(*phi_atoms, [])
        omm.addForce(bias)
        integ = openmm.LangevinMiddleIntegrator(300.0 * u.kelvin, 1.0 / u.picosecond, 0.001 * u.picoseconds)
        integ.setRandomNumberSeed(seed + w + 1)
        ctx = openmm.Context(omm, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
        start = system.structure.copy()
        ctx.setPositions(start)
        # drive phi towards the window first (the bias does it), then equilibrate
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0)
        ctx.setVelocitiesToTemperature(300.0 * u.kelvin, seed + w + 1)
        integ.step(20000)
        n_frames = int(ps_per_window * 1000 / 100)
        for _ in range(n_frames):
            integ.step(100)
            x = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
            xx = torch.as_tensor(x[None])
            from latentlab.energies.amber import dihedral_angles

            ang = dihedral_angles(xx, torch.as_tensor([phi_atoms, psi_atoms]))[0].numpy()
            frames_phi.append(ang[0])
            frames_psi.append(ang[1])
            window_of.append(w)
    phi, psi, window_of = np.asarray(frames_phi), np.asarray(frames_psi), np.asarray(window_of)
    if frames_file:
        np.savez(frames_file, phi=phi, psi=psi, window=window_of, centers=centers)
    d = np.abs(phi[None, :] - centers[:, None])
    d = np.minimum(d, 2 * math.pi - d)
    u_kn = 0.5 * k_rad * d**2 / kt  # reduced bias of every frame in every window, (K, N)

    def populations(mask):
        w = mbar_weights(u_kn[:, mask], np.bincount(window_of[mask], minlength=n_windows).astype(float))
        deg_phi, deg_psi = np.degrees(phi[mask]), np.degrees(psi[mask])
        return {"C5": float(w[deg_phi < -120].sum()), "C7eq": float(w[(deg_phi > -120) & (deg_phi < 0)].sum()),
                "alpha_R": float(w[(deg_phi < 0) & (deg_psi > -90) & (deg_psi < -10)].sum()),
                "phi>0": float(w[deg_phi > 0].sum())}

    every = np.ones(len(phi), bool)
    best = populations(every)
    position = np.concatenate([np.arange((window_of == w).sum()) for w in range(n_windows)])
    per_window = (window_of[:, None] == np.arange(n_windows)[None]).sum(0)
    block = (position * n_blocks // per_window[window_of]).astype(int)
    blocks = [populations(block == b) for b in range(n_blocks)]
    out = {name: {"value": best[name], "stderr": float(np.std([b[name] for b in blocks], ddof=1) / math.sqrt(n_blocks))}
           for name in best}
    out["_settings"] = {"windows": n_windows, "ps_per_window": ps_per_window, "k_kJ_per_mol_per_deg2": k_deg,
                        "frames": int(len(phi)), "seconds": time.perf_counter() - t0}
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


def markdown(results: dict) -> str:
    """The results table of docs/flows.md from a bench JSON."""
    lines = ["| system | steps | batch | train s | load | ESS | populations (value +- se; target; z) | other |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.get("systems", {}).items():
        pops = "<br>".join(f"{k} {e['value']:.4f} +- {e['stderr']:.4f}; {e.get('exact', e.get('reference')):.4f}; "
                           f"{e['z']:+.1f}" for k, e in r["populations"].items())
        other = []
        if "bond_score" in r:
            other.append(f"bond score {r['bond_score']:.4f}")
        if "corr_z_x1" in r:
            other.append(f"corr(z, x1) {r['corr_z_x1']:+.3f}")
        other.append(f"{r['step_seconds'] * 1000:.0f} ms/step")
        load = 0.5 * (r["load_before"][0] + r["load_after"][0])
        lines.append(f"| {name} | {r['steps']} | {r['batch']} | {r['train_seconds']:.0f} | {load:.1f} | "
                     f"{r['ess_fraction']:.3f} | {pops} | {'; '.join(other)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--samples", type=int, default=None, help="samples per report (default 100000; 200000 for alanine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_flows.json"))
    p.add_argument("--keep", default=os.path.join(HERE, "results", "flows"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--umbrella", action="store_true", help="also run the umbrella-sampling reference of alanine")
    p.add_argument("--umbrella-only", action="store_true", help="only the umbrella-sampling reference")
    p.add_argument("--markdown", default=None, metavar="JSON", help="print the docs table of an earlier run and exit")
    args = p.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as fh:
            print(markdown(json.load(fh)))
        return 0
    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems {unknown}; use {', '.join(SYSTEMS)}")
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                           "cpu_count": os.cpu_count(), "device": args.device}, "systems": {}}
    if args.umbrella_only and args.out == p.get_default("out"):
        args.out = os.path.join(HERE, "results", "bench_flows_umbrella.json")
    if args.umbrella or args.umbrella_only:
        results["alanine_umbrella_300K"] = umbrella_reference(
            20.0 if args.quick else 200.0, frames_file=os.path.join(HERE, "results", "alanine_umbrella_frames.npz"))
        print("umbrella sampling along phi, 300 K:", ", ".join(
            f"{k} {v['value']:.4f} +- {v['stderr']:.4f}" for k, v in results["alanine_umbrella_300K"].items()
            if not k.startswith("_")))
        if args.umbrella_only:
            names = []
    if "alanine-dipeptide" in names:
        results["energy_throughput_1000_frames_s"] = energy_throughput()
    for name in names:
        n = args.samples or (200000 if name == "alanine-dipeptide" else 100000)
        if args.quick:
            n = min(n, 20000)
        results["systems"][name] = run_system(name, n, args.device, args.keep, args.quick)
        write_results(results, args.out, indent=1)  # after every system: a long run keeps what it measured
    write_results(results, args.out, indent=1)
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
