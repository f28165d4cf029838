"""``latentlab kinetics TRAJ [--reference DATA]``: autocorrelation times, MSM timescales and first passages."""

from __future__ import annotations

import json
import os

BASINS_HELP = """
    named basins for first-passage times: 'auto' (built-in set when one fits the coordinates: alanine-dipeptide
    for phi/psi, chignolin for its CA triangle), a built-in name, 'none', or a spec NAME:COND[,COND];... with
    COND like a<x<b, x<b or x>a, numbers in the coordinate's unit or with 'deg' for angles, e.g.
    "A:phi<-2.1;B:-2.1<phi<0" or "folded:r13<0.6;unfolded:r13>0.8" (r13: the first-to-third atom distance of a
    triangle map)"""


def register(sub) -> None:
    p = sub.add_parser(
        "kinetics", help="kinetics of a trajectory in Q: ACFs, tau_int, MSM implied timescales, CK test, MFPTs",
        description="""
        Analyse the kinetics of a trajectory in Q (a SIM file from 'latentlab simulate', or a data set: built-in
        name or path) on deeptime: autocorrelation functions and integrated autocorrelation times, a Bayesian
        MSM with implied timescales vs lag (95 % intervals), a Chapman-Kolmogorov test and mean first-passage
        times between named basins. Walkers, replicas and restarts are separate trajectories, never joined. With
        --reference, the model and the reference are analysed at one frame spacing on the reference's states,
        lag and basins. See docs/kinetics.md.""")
    p.add_argument("traj", metavar="TRAJ", help="SIM file (.npz from 'latentlab simulate') or data set (name or path)")
    p.add_argument("--reference", metavar="DATA", default=None,
                   help="reference data set (name or path; a SIM file also works) to compare with")
    p.add_argument("--lag", type=float, default=None, metavar="PS",
                   help="MSM lag time in ps, a whole number of frames (default: chosen from the implied-timescale "
                        "scan of the reference, or of TRAJ)")
    p.add_argument("--basins", default="auto", help=BASINS_HELP)
    p.add_argument("--map", dest="spec", default=None,
                   help="map spec for data sets (default: the SIM file's map, else the data set's own)")
    p.add_argument("--topology", default=None, help="topology for trajectory files / .npy positions")
    p.add_argument("--temperature", type=float, default=None, help="K, for trajectory files / .npy positions")
    p.add_argument("--burn-in", type=float, default=None,
                   help="fraction of a SIM file's records dropped at the start (default 0.1; data sets: none)")
    p.add_argument("--clusters", type=int, default=50, help="k-means states of the MSM (default 50)")
    p.add_argument("--samples", type=int, default=100, help="Bayesian MSM samples per lag (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means, posterior sampling and bootstrap")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="write ACFs, implied timescales, CK test and the MFPT table to this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.set_defaults(func=run)


def _is_sim(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(".npz")


def load_trajectories(path: str, args, spec: str | None = None):
    """A SIM file or a data set as :class:`~latentlab.kinetics.Trajectories`."""
    from latentlab.kinetics import Trajectories
    from latentlab.validation import fail

    if _is_sim(path):
        burn = 0.1 if args.burn_in is None else args.burn_in
        return Trajectories.from_simulation(path, burn_in=burn)
    if args.burn_in:
        fail("--burn-in", f"applies to SIM files, but {path} is a data set", "leave it out for data sets")
    from latentlab.data import load

    ds = load(path, topology=args.topology, temperature=args.temperature)
    return Trajectories.from_dataset(ds, spec)


def run(args) -> int:
    import numpy as np

    from latentlab.io import atomic_output, output_path
    from latentlab.kinetics import analyze, compare, plot_kinetics
    from latentlab.kinetics.analysis import lag_frames
    from latentlab.kinetics.basins import resolve_basins
    from latentlab.validation import fail

    for name, value, low in (("--clusters", args.clusters, 2), ("--samples", args.samples, 0)):
        if value < low:
            fail(name, f"got {value}", f"use an integer >= {low}")
    if args.lag is not None and not args.lag > 0:
        fail("--lag", f"got {args.lag}", "give a positive lag time in ps")
    plot = None
    if args.plot:
        plot = output_path(args.plot, "plot", overwrite=args.overwrite, inputs=[args.traj, args.reference],
                           argument="--plot")
    traj = load_trajectories(args.traj, args, args.spec)
    # A bad --basins fails here, before any heavy work.
    basins = resolve_basins(args.basins, traj)
    settings = dict(n_clusters=args.clusters, n_samples=args.samples, seed=args.seed)
    if args.reference:
        ref = load_trajectories(args.reference, args, args.spec or traj.map_spec)
        if args.lag is not None:  # analysed at the coarser of the two spacings
            lag_frames(args.lag, max(traj.dt_ps, ref.dt_ps), "--lag")
        if basins is None and args.basins.strip().lower() == "auto":
            basins = resolve_basins("auto", ref)
        result = compare(traj, ref, basins=basins, lag_ps=args.lag, **settings)
        out = result.to_dict()
        out.update({"traj": args.traj, "reference_data": args.reference})
        parts = {"reference": result.reference, "model": result.model}
    else:
        if args.lag is not None:
            lag_frames(args.lag, traj.dt_ps, "--lag")
        result = analyze(traj, basins=basins, lag_ps=args.lag, **settings)
        out = result.to_dict()
        out["traj"] = args.traj
        parts = {"": result}
    if plot:
        title = f"kinetics: {os.path.basename(args.traj)}" + (f" vs {args.reference}" if args.reference else "")
        with atomic_output(plot) as tmp:
            plot_kinetics(result, tmp, title=title)
        out["plot"] = plot
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for label, res in parts.items():
        d = res.to_dict(acf=False)
        head = f"== {label} " if label else "== "
        print(f"{head}{d['source']}: {d['n_trajectories']} trajectories, {d['n_frames']} frames every {d['dt_ps']:g} ps")
        for k, v in d["tau_int_ps"].items():
            print(f"tau_int {k:8s} {v:10.4g} ps  +- {d['tau_int_stderr_ps'][k]:.2g}")
        if d["lag_ps"] is not None and d["implied_timescales_ps"]:
            print(f"implied timescales at lag {d['lag_ps']:g} ps (95 % interval):")
            for t, iv, ok in zip(d["implied_timescales_ps"], d["implied_timescales_interval_ps"],
                                 d["implied_timescales_resolved"]):
                lo, hi = (np.nan, np.nan) if iv is None or iv[0] is None else iv
                print(f"  {t if t is not None else float('nan'):10.4g} ps  [{lo:.4g}, {hi:.4g}]"
                      + ("" if ok else "  (not longer than the lag: not resolved)"))
        for k, v in d["mfpt_ps"].items():
            se = d["mfpt_stderr_ps"][k]
            n = d["mfpt_transitions"][k]
            text = "no transition" if v is None else f"{v:.4g} ps" + (f" +- {se:.2g}" if se is not None else "")
            print(f"MFPT {k:22s} {text}  ({n} transitions)")
        for w in d["warnings"]:
            print(f"note: {w}")
    if args.reference:
        r = result.ratios()
        parts_txt = [f"tau_int {k} {v:.3g}" for k, v in r["tau_int"].items() if v is not None]
        if r["implied_timescales"] and r["implied_timescales"][0] is not None:
            parts_txt.append(f"slowest implied timescale {r['implied_timescales'][0]:.3g}")
        parts_txt += [f"MFPT {k} {v:.3g}" for k, v in r["mfpt"].items()
                      if v is not None and result.reference.mfpt[k]["transitions"] >= 10]
        print("== model / reference: " + ", ".join(parts_txt))
        for w in result.warnings:
            print(f"note: {w}")
    if plot:
        print(f"plot: {plot}")
    return 0
