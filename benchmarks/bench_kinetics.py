"""Kinetic analysis of the built-in references: time to analyse and the numbers it gives.

Target (issue 12): the whole analysis of the 12,500-frame alanine-dipeptide reference
(load, map to phi/psi, ACFs and tau_int, Bayesian MSM with the implied-timescale scan,
CK test, direct and MSM MFPTs) in < 30 s on 2 CPU cores.  The time is measured for the
whole call, ``latentlab.data.load`` included, as wall clock and as CPU time of this
process (the machine may be shared; the CPU time is what the analysis itself costs).

Usage::

    python benchmarks/bench_kinetics.py [--systems alanine-dipeptide chignolin] [--repeats 2] [--threads 2]

Prints a table and writes ``benchmarks/results/bench_kinetics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = ("alanine-dipeptide", "chignolin")
TARGET_S = 30.0


def analyse(name: str, seed: int) -> tuple[dict, float, float]:
    """(result dict, wall s, CPU s) of one full analysis, loading included."""
    from latentlab.data import load
    from latentlab.kinetics import Trajectories, analyze

    w0, c0 = time.perf_counter(), time.process_time()
    tr = Trajectories.from_dataset(load(name))
    res = analyze(tr, seed=seed)
    out = res.to_dict(acf=False)
    return out, time.perf_counter() - w0, time.process_time() - c0


def _fmt_iv(v, iv) -> str:
    if v is None:
        return "-"
    if not iv or iv[0] is None:
        return f"{v:.3g}"
    return f"{v:.3g} [{iv[0]:.3g}, {iv[1]:.3g}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--repeats", type=int, default=2, help="runs per system; the fastest is reported")
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy/torch/OpenMP (default 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    rows = []
    results = {}
    for name in args.systems:
        runs = [analyse(name, args.seed) for _ in range(max(1, args.repeats))]
        best = min(runs, key=lambda r: r[1])
        d, wall, cpu = best
        results[name] = d
        rows.append({"system": name, "frames": d["n_frames"], "dt_ps": d["dt_ps"], "wall_s": wall, "cpu_s": cpu,
                     "all_wall_s": [r[1] for r in runs], "all_cpu_s": [r[2] for r in runs],
                     "analysis_s": d["seconds"].get("total"), "target_s": TARGET_S if name == "alanine-dipeptide" else None})

    print(f"{'system':20s} {'frames':>7s} {'dt ps':>6s} {'wall s':>7s} {'CPU s':>7s} {'analyze s':>9s}  target")
    for r in rows:
        target = "" if r["target_s"] is None else (f"< {r['target_s']:g} s: " + ("met" if r["wall_s"] < r["target_s"] else "MISSED"))
        print(f"{r['system']:20s} {r['frames']:7d} {r['dt_ps']:6g} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} "
              f"{r['analysis_s']:9.2f}  {target}")
    for name, d in results.items():
        print(f"\n== {name}: lag {d['lag_ps']:g} ps, {d['msm']['n_states']} states, tau_int floor (dt/2) "
              f"{d['tau_int_floor_ps']:g} ps")
        for k, v in d["tau_int_ps"].items():
            print(f"  tau_int {k:6s} {v:8.3g} +- {d['tau_int_stderr_ps'][k]:.2g} ps")
        for i, (t, iv) in enumerate(zip(d["implied_timescales_ps"][:3], d["implied_timescales_interval_ps"][:3])):
            corr = d["implied_timescales_basins"][i] if i < len(d["implied_timescales_basins"]) else {}
            top = max(corr.items(), key=lambda kv: abs(kv[1])) if corr else None
            what = f"  (eigenvector vs {top[0]}: r = {top[1]:+.2f})" if top else ""
            res = "" if d["implied_timescales_resolved"][i] else "  NOT resolved (< lag)"
            print(f"  implied timescale {i + 1}: {_fmt_iv(t, iv)} ps{what}{res}")
        for k, v in d["mfpt_ps"].items():
            if d["mfpt_transitions"][k] < 10:
                continue
            se = d["mfpt_stderr_ps"][k]
            msm = d["mfpt_msm_ps"].get(k)
            print(f"  MFPT {k:18s} {v:9.4g} +- {se:.2g} ps ({d['mfpt_transitions'][k]} transitions; MSM "
                  f"{'-' if msm is None else f'{msm:.4g}'} ps)")
        for b, v in d["basin_visits"].items():
            if v["visits"]:
                print(f"  visits to {b:8s} {v['visits']:6d}, mean dwell {v['mean_dwell_ps']:.3g} ps, "
                      f"{v['single_frame_fraction']:.0%} last one frame")

    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench_kinetics.json")
    with open(path, "w") as fh:
        json.dump({"rows": rows, "results": results, "threads": args.threads, "cpu_count": os.cpu_count(),
                   "loadavg": os.getloadavg(), "python": sys.version.split()[0], "platform": platform.platform()},
                  fh, indent=1)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
