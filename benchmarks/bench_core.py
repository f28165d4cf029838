"""Core benchmarks: latent Langevin throughput vs its floor, batched A(q)/g(q) vs a per-frame loop.

Prints a table and writes JSON (default ``benchmarks/results/bench_core.json``).
Ratios are measured side by side in one run, since absolute times on shared
machines are noisy.  Usage::

    python benchmarks/bench_core.py [--device cpu|cuda] [--quick] [--out FILE]

Langevin: N = 3 (the three-atom map with its closed-form A), V an MLP with three
hidden layers of 128 (SiLU), float32.  The *floor* is one batched evaluation of
V and grad V plus A and dA/dQ at the walkers' positions, i.e. the work any
integrator of this H must do once per step; the step adds the fixed-point
iterations, the friction step's eigen-decomposition and the bookkeeping.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform

import torch
from _common import mlp, write_results
from _common import timeit as _timeit

from latentlab.dynamics import LatentLangevin
from latentlab.forces import force_matching_target
from latentlab.maps import effective_mass
from latentlab.testing import ThreeAtomSystem


#: Timing of this script: batches of at least 0.5 s, at least 3 and at most 201 calls.
timeit = functools.partial(_timeit, min_time=0.5, min_reps=3, max_reps=200)


def bench_langevin(device: str, walker_counts, steps_per_call: int = 5) -> list[dict]:
    torch.manual_seed(0)
    system = ThreeAtomSystem()
    dtype = torch.float32
    net = mlp(3).to(device=device, dtype=dtype)

    def potential(q):
        return net(q)[:, 0]

    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    rows = []
    for w in walker_counts:
        sampler = LatentLangevin(potential, system.effective_mass, system.kT, dt=0.002, gamma=50.0,
                                 bounds=system.cg_map().bounds, device=device, dtype=dtype, seed=1)
        q0 = system.sample_cg(w, seed=2).to(device=device, dtype=dtype)
        state = sampler.init(q0)
        floor = timeit(lambda: sampler._evaluate(state.Q), sync=sync)
        step = timeit(lambda: sampler.step(state, steps_per_call), sync=sync) / steps_per_call
        rows.append({"walkers": w, "step_ms": 1e3 * step, "floor_ms": 1e3 * floor, "ratio_to_floor": step / floor,
                     "walker_steps_per_s": w / step, "reseeded": state.counters["reseeded"],
                     "not_converged": state.counters["not_converged"]})
    return rows


def bench_batched_vs_loop(device: str, n_frames: int, n_loop: int) -> list[dict]:
    system = ThreeAtomSystem()
    x, f = system.sample(n_frames, seed=3)
    x, f = x.to(device), f.to(device)
    masses = system.masses_tensor(device=device)
    cg_map = system.cg_map()
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    rows = []
    for name, batched, single in [
        ("A(q)", lambda: effective_mass(cg_map, x, masses),
         lambda: [effective_mass(cg_map, x[i:i + 1], masses) for i in range(n_loop)]),
        ("g(q)", lambda: force_matching_target(cg_map, x, f, masses, system.kT),
         lambda: [force_matching_target(cg_map, x[i:i + 1], f[i:i + 1], masses, system.kT) for i in range(n_loop)]),
    ]:
        tb = timeit(batched, sync=sync) / n_frames
        tl = timeit(single, min_time=0.5, min_reps=1, sync=sync) / n_loop
        rows.append({"quantity": name, "frames": n_frames, "batched_frames_per_s": 1 / tb, "loop_frames_per_s": 1 / tl,
                     "speedup": tl / tb})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer walkers and frames (a smoke run)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_core.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    walkers = [1, 64, 1024] if args.quick else [1, 64, 1024, 16384]
    langevin = bench_langevin(args.device, walkers)
    batched = bench_batched_vs_loop(args.device, 2000 if args.quick else 20000, 50 if args.quick else 200)

    print(f"latent Langevin, N = 3, MLP V 3x128 float32, device {args.device}, {args.threads} thread(s)")
    print(f"{'walkers':>8} {'step ms':>9} {'floor ms':>9} {'step/floor':>10} {'walker-steps/s':>15}")
    for r in langevin:
        print(f"{r['walkers']:>8} {r['step_ms']:>9.3f} {r['floor_ms']:>9.3f} {r['ratio_to_floor']:>10.2f} "
              f"{r['walker_steps_per_s']:>15.3e}")
    print()
    print(f"{'quantity':>8} {'batched frames/s':>17} {'loop frames/s':>14} {'speedup':>8}")
    for r in batched:
        print(f"{r['quantity']:>8} {r['batched_frames_per_s']:>17.3e} {r['loop_frames_per_s']:>14.3e} {r['speedup']:>8.1f}")
    result = {"benchmark": "core", "device": args.device, "threads": args.threads, "torch": torch.__version__,
              "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
              "langevin": langevin, "batched_vs_loop": batched,
              "targets": {"langevin_ratio_to_floor_at_1024": "<= 3", "g_batched_speedup": ">= 50"}}
    write_results(result, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
