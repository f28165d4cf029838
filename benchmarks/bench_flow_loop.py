"""The loop closed: a CG model trained on a flow's weighted samples in its slow latent reproduces the flow.

Usage::

    python benchmarks/bench_flow_loop.py [--systems double-well,alanine-dipeptide] [--flows DIR]
                                         [--out FILE] [--work DIR] [--threads 1]

For each system, with the flow ``DIR/SYSTEM.pt`` of ``benchmarks/bench_flows.py`` (or
``latentlab flow train SYSTEM``; alanine dipeptide with k = 2), the public commands, exactly::

    latentlab flow sample FLOW --n N --out DATA.h5 --seed 1 [--no-forces]
    latentlab train DATA.h5 --map flow:FLOW --out V.pt [--objective relative-entropy]
    latentlab simulate V.pt --walkers W --steps S --dt DT --gamma G --out SIM.npz --seed 2
    latentlab compare SIM.npz --reference DATA.h5 --json

``compare`` reweights the reference histograms and its noise floor (first vs second half of the samples)
with the data set's importance weights.  The walkers start from the model's start points, a resample of the
samples by weight: latent Langevin does not cross barriers of ~10 kT within the run, so the basin
populations of the simulation are those of the start; the relative free energy of the basins is checked
separately by the *quadrature* ratio: independent samples of the model's stationary density
``exp(-V/kT) det A^{-1/2}`` on a grid (:func:`latentlab.flows.loop.model_marginal_samples`), scored by
the same ``compare_latent``.  Must reach: ``compare`` ratio <= 1.5.

Prints a table and writes JSON (default ``benchmarks/results/bench_flow_loop.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latentlab.cli import main  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

#: Per system: samples, walkers, steps, time step (ps), friction (amu/ps), extra options of ``flow sample`` and
#: ``train``.  Double well: the friction is below the auto value (a rate of 10/ps, overdamped there), so the
#: basins are sampled ~3x faster; ``train`` with its default objective (force matching, then relative entropy
#: on the grid).  Alanine dipeptide: relative entropy on the grid from the weighted configurations alone --
#: the mean-force targets of a flow map need the divergence of J^T-like terms, second derivatives of the whole
#: flow per frame (~0.2 s per frame on one core, hours for 50,000 frames).
SETTINGS = {
    "double-well": dict(n=20000, walkers=1000, steps=5000, dt=0.01, gamma=15.0, sample_args=[], train_args=[]),
    "alanine-dipeptide": dict(n=50000, walkers=1000, steps=5000, dt=0.002, gamma="auto", sample_args=["--no-forces"],
                              train_args=["--objective", "relative-entropy"]),
}


def _cli(argv: list[str]) -> tuple[float, str]:
    """Run one latentlab command; its wall time and its standard output (refuses a failed command)."""
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"latentlab {' '.join(argv)} failed with exit code {rc}:\n{buf.getvalue()[-2000:]}")
    return seconds, buf.getvalue()


def run_system(name: str, flow: str, work: str, settings: dict) -> dict:
    from latentlab.compare import compare_latent
    from latentlab.data import load
    from latentlab.flows.loop import model_marginal_samples
    from latentlab.model import CGModel

    data, model, sim = (os.path.join(work, f"{name}.{ext}") for ext in ("h5", "pt", "npz"))
    s = settings
    commands = {
        "sample": ["flow", "sample", flow, "--n", str(s["n"]), "--out", data, "--seed", "1", "--overwrite",
                   *s["sample_args"]],
        "train": ["train", data, "--map", f"flow:{flow}", "--out", model, "--overwrite", "--no-progress", "--json",
                  *s["train_args"]],
        "simulate": ["simulate", model, "--walkers", str(s["walkers"]), "--steps", str(s["steps"]), "--dt", str(s["dt"]),
                     "--gamma", str(s["gamma"]), "--out", sim, "--seed", "2", "--overwrite", "--no-progress", "--json"],
        "compare": ["compare", sim, "--reference", data, "--json"],
    }
    seconds, outputs = {}, {}
    for step, argv in commands.items():
        print(f"[{name}] latentlab {' '.join(argv)}", flush=True)
        seconds[step], outputs[step] = _cli(argv)
    cmp = json.loads(outputs["compare"])
    simj = json.loads(outputs["simulate"])
    ds = load(data)
    m = CGModel.load(model)
    cg = m.cg_map(ds)
    z = cg.map_frames(ds.positions).numpy()
    w = ds.weights
    t0 = time.perf_counter()
    x = model_marginal_samples(m, z, 500_000, seed=3)
    quad = compare_latent(x, z, names=cg.names, periodic=cg.periodic, reference_weights=w)
    seconds["quadrature"] = time.perf_counter() - t0
    ess = float(w.sum() ** 2 / (w**2).sum())
    q = np.load(sim, allow_pickle=True)["Q"]
    q = q[q.shape[0] // 4:].reshape(-1, q.shape[-1])
    return {
        "system": name, "flow": os.path.abspath(flow), "slow_dims": int(z.shape[1]), "settings": s,
        "n_samples": int(ds.n_frames), "ess_fraction": ess / ds.n_frames,
        "compare": {k: cmp[k] for k in ("js_divergence", "js_noise_floor", "ratio", "kl", "wasserstein",
                                        "wasserstein_noise_floor", "binning", "n_samples", "reference_weighted")},
        "ratio": cmp["ratio"],
        "quadrature": {k: quad[k] for k in ("js_divergence", "js_noise_floor", "ratio")},
        "quadrature_ratio": quad["ratio"],
        "mean_z": {"reference": np.average(z, axis=0, weights=w).tolist(), "simulation": q.mean(0).tolist(),
                   "quadrature": x.mean(0).tolist()},
        "simulation": {k: simj.get(k) for k in ("gamma", "dt", "walkers", "steps_done", "simulated_ps", "diagnostics")},
        "objective": m.training.get("kind"), "consistency": m.consistency,
        "seconds": seconds, "met": bool(cmp["ratio"] <= 1.5),
        "commands": {k: "latentlab " + " ".join(v) for k, v in commands.items()},
    }


def main_(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default="double-well,alanine-dipeptide")
    p.add_argument("--flows", default=os.path.join(HERE, "results", "flows"), help="folder of SYSTEM.pt flow files")
    p.add_argument("--work", default=os.path.join(HERE, "results", "flow_loop"), help="folder for data, models, runs")
    p.add_argument("--out", default=os.path.join(HERE, "results", "bench_flow_loop.json"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                           "cpu_count": os.cpu_count(), "load_before": list(os.getloadavg())}, "systems": {}}
    for name in args.systems.split(","):
        flow = os.path.join(args.flows, f"{name}.pt")
        if not os.path.exists(flow):
            raise SystemExit(f"no flow {flow}: train it first (latentlab flow train {name} --out {flow})")
        results["systems"][name] = run_system(name, flow, args.work, SETTINGS[name])
        results["machine"]["load_after"] = list(os.getloadavg())
        with open(args.out + ".tmp", "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(args.out + ".tmp", args.out)
    print()
    print("| system | k | samples | ESS | compare JS | noise floor | ratio | quadrature ratio | met (<= 1.5) | "
          "sample / train / simulate s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results["systems"].items():
        c, sec = r["compare"], r["seconds"]
        print(f"| {name} | {r['slow_dims']} | {r['n_samples']} | {r['ess_fraction']:.3f} | {c['js_divergence']:.5f} | "
              f"{c['js_noise_floor']:.5f} | {r['ratio']:.3f} | {r['quadrature_ratio']:.3f} | "
              f"{'yes' if r['met'] else 'no'} | {sec['sample']:.0f} / {sec['train']:.0f} / {sec['simulate']:.0f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
