"""Bare arrays in, the same model out: alanine dipeptide imported without a topology.

Published CG data sets often ship positions and forces as plain arrays, sometimes of the backbone
heavy atoms only.  This benchmark exports the built-in alanine dipeptide (300 K, 12,500 frames every
8 ps) as ``.npy`` arrays and imports them with ``latentlab import`` in two ways:

* ``bare-22``: all 22 atoms (positions, forces, masses; no topology: bonds are inferred);
* ``backbone-5``: the five heavy atoms of phi and psi (C, N, CA, C, N: indices 4, 6, 8, 10, 16),
  positions and forces of those atoms only (as a CG data set ships them).

Each data set, and the built-in set with its topology, is trained with force matching on the map
``dihedrals:i-j-k-l`` (phi, psi by atom indices) holding out the last 20 % (``--holdout 0.2``), run with
latent Langevin (500 walkers x 5000 steps of 2 fs) and scored by ``compare --against holdout`` against
the built-in set's held-out frames, exactly as ``benchmarks/heldout_scores.py`` does.  The table shows
the mean-force estimator each run chose (the rigid-rotation estimator of the dihedrals is what a bare
import must still get) and the held-out JS ratio.

Usage::

    python benchmarks/bench_bare_import.py [--seeds 0 1] [--walkers 500] [--steps 5000] [--out FILE]

Prints a table and writes JSON (default ``benchmarks/results/bench_bare_import.json``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heldout_scores import add_protocol_options, save_rows, train_and_score  # noqa: E402

from latentlab.data import load  # noqa: E402
from latentlab.training import ForceMatching, Trainer  # noqa: E402

BACKBONE = [4, 6, 8, 10, 16]  # C(ACE) N CA C N(NME): the atoms of phi and psi
VARIANTS = {
    "built-in (topology)": (None, "dihedrals:4-6-8-10,6-8-10-16"),
    "bare-22 (no topology)": (list(range(22)), "dihedrals:4-6-8-10,6-8-10-16"),
    "backbone-5 (no topology)": (BACKBONE, "dihedrals:0-1-2-3,1-2-3-4"),
}


def import_arrays(ds, atoms, folder: str, name: str) -> str:
    """Write the data set's arrays for ``atoms`` as .npy and import them with the CLI; returns the file."""
    paths = {}
    for key, array in (("positions", ds.positions[:, atoms]), ("forces", ds.forces[:, atoms]),
                       ("masses", np.asarray(ds.masses)[atoms])):
        paths[key] = os.path.join(folder, f"{name}-{key}.npy")
        np.save(paths[key], np.asarray(array))
    out = os.path.join(folder, f"{name}.h5")
    dt = float(ds.time[1] - ds.time[0])
    subprocess.run([sys.executable, "-m", "latentlab", "import", "--positions", paths["positions"], "--forces",
                    paths["forces"], "--masses", paths["masses"], "--temperature", str(ds.temperature), "--dt",
                    str(dt), "--name", name, "--out", out], check=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    add_protocol_options(parser, "bench_bare_import")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    builtin = load("alanine-dipeptide")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for variant, (atoms, spec) in VARIANTS.items():
            ds = builtin if atoms is None else load(import_arrays(builtin, atoms, folder, variant.split()[0]))
            for seed in args.seeds:
                cg_map = ds.map(spec)
                model, scored = train_and_score(
                    lambda: Trainer(ForceMatching(), seed=seed, holdout=args.holdout, device="cpu").fit(ds, cg_map),
                    ds, seed, args.walkers, args.steps)  # scored on this data set's held-out frames
                row = {"variant": variant, "n_atoms": ds.n_atoms, "has_topology": ds.topology is not None,
                       "seed": seed, "method": model.training.get("method"), **scored}
                rows.append(row)
                print(f"{variant:26s} seed {seed}: estimator {row['method']}, ratio {row['ratio']:.3f} "
                      f"(train {row['train_seconds']:.0f} s)", flush=True)
    save_rows(rows, args)
    print()
    print(f"{'data':<26} {'atoms':>5} {'estimator':<16} {'ratios (held out)':<20} {'mean':>6}")
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant]
        ratios = [r["ratio"] for r in sel]
        print(f"{variant:<26} {sel[0]['n_atoms']:>5} {str(sel[0]['method']):<16} "
              f"{', '.join(f'{x:.3f}' for x in ratios):<20} {np.mean(ratios):>6.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
