"""Training on a data set larger than one wants in memory: lazy HDF5 streaming vs loading, side by side.

Builds a synthetic CA data set of ``--frames`` frames (default 1,000,000: the built-in chignolin CA
frames tiled with small Gaussian noise on positions and forces; written once to ``--data``, not
committed), then trains force matching on it twice, each in a fresh process: with the frames loaded
into memory and with ``lazy=True`` (blocks read from the file).  For each it reports the wall time, the
frames per second (frames x epochs / time) and the peak resident memory above the process's memory
after importing latentlab and building the (untrained) model.

Usage::

    python benchmarks/bench_lazy.py [--frames 1000000] [--epochs 1] [--data FILE] [--out FILE]

Prints a table and writes JSON (default ``benchmarks/results/bench_lazy.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

WORKER = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from latentlab.data import load
from latentlab.training import Trainer
path, lazy, epochs = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
ds = load(path, lazy=lazy)
model = Trainer(epochs=epochs, refit=False, patience=0, seed=0, device="cpu").fit(ds)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"lazy": lazy, "seconds": seconds, "frames": ds.n_frames, "epochs": epochs,
                  "peak_mb_above_start": (peak - base) / 1024, "peak_mb": peak / 1024,
                  "val_loss": model.training["history"][-1]["val_loss"]}))
"""


def build(path: str, n_frames: int, seed: int = 0) -> None:
    from latentlab.data import Dataset, load

    src = load("chignolin")
    rng = np.random.default_rng(seed)
    reps = -(-n_frames // src.n_frames)
    pos = np.concatenate([src.positions + rng.normal(scale=0.002, size=src.positions.shape).astype(np.float32)
                          for _ in range(reps)])[:n_frames]
    frc = np.concatenate([src.forces + rng.normal(scale=5.0, size=src.forces.shape).astype(np.float32)
                          for _ in range(reps)])[:n_frames]
    Dataset.from_arrays(pos, frc, masses=src.masses, temperature=src.temperature, topology=src.topology,
                        check_units=False, name=f"synthetic-ca-{n_frames}", default_map=src.default_map,
                        forces_aggregated=True).save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default=os.path.join("benchmarks", "results", "synthetic-ca.h5"))
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "bench_lazy.json"))
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.data)), exist_ok=True)
    if not os.path.exists(args.data):
        t0 = time.perf_counter()
        build(args.data, args.frames)
        print(f"built {args.data} ({args.frames} frames, {os.path.getsize(args.data) / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f} s")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    for lazy in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", WORKER, args.data, lazy, str(args.epochs)], env=env,
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    eager, lazy = rows
    for r in rows:
        r["frames_per_s"] = r["frames"] * r["epochs"] / r["seconds"]
    print(f"{'mode':<10} {'seconds':>8} {'frames/s':>10} {'peak MB above start':>20} {'val loss':>10}")
    for r in rows:
        print(f"{'lazy' if r['lazy'] else 'in memory':<10} {r['seconds']:>8.1f} {r['frames_per_s']:>10.3g} "
              f"{r['peak_mb_above_start']:>20.0f} {r['val_loss']:>10.5g}")
    summary = {"rows": rows, "lazy_over_memory_speed": lazy["frames_per_s"] / eager["frames_per_s"],
               "same_model": abs(lazy["val_loss"] - eager["val_loss"]) <= 1e-9 * abs(eager["val_loss"]),
               "load_average": os.getloadavg()}
    print(f"lazy / in-memory frames/s: {summary['lazy_over_memory_speed']:.2f}; same model: {summary['same_model']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
