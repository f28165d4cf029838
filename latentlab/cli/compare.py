"""``latentlab compare SIM --reference DATA``: latent histograms of a simulation vs the ground truth."""

from __future__ import annotations

import json
import math


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare a latent simulation with reference data (JS divergence vs noise floor)",
                       description="""
        Histogram the simulated Q (after burn-in) and the reference's Q (the map stored in SIM) on one grid and
        report the Jensen-Shannon divergence, the reference's own noise floor (its first vs second half in
        time), their ratio, KL and 1-D Wasserstein distances. A model trained with --holdout is scored against
        the frames it never saw. A perfect model scores a ratio of about 1/4 (its samples are compared with all
        N scored frames, the floor compares two halves of N/2); about 1 is as far from the data as the data is
        from itself. Binning: the joint histogram for up to 3 coordinates (10 bins per coordinate in 3-D, 30 in
        2-D), the reference range +5 %, one overflow bin.""")
    p.add_argument("sim", metavar="SIM", help="simulation file from 'latentlab simulate'")
    p.add_argument("--reference", required=True, metavar="DATA", help="built-in data set name or path")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="PNG", default=None, help="write ground truth and model side by side")
    p.add_argument("--burn-in", type=float, default=0.25,
                   help="fraction of the records dropped at the start (default 0.25)")
    p.add_argument("--bins", type=int, default=None, help="bins per coordinate (default 10 in 3-D, 30 in 2-D)")
    p.add_argument("--map", dest="spec", default=None, help="map spec (default: the one stored in SIM)")
    p.add_argument("--overwrite", action="store_true", help="replace the --plot file if it exists")
    p.add_argument("--against", default="auto", choices=["auto", "holdout", "all"],
                   help="reference frames to score against: holdout (the frames the model never saw, recorded by "
                        "'train --holdout'), all, or auto (default: holdout when the model has one)")
    p.add_argument("--ignore-diagnostics", action="store_true",
                   help="compare even when SIM's run was unhealthy (more than 1 %% of walker-steps re-seeded, or "
                        "the kinetic temperature off by more than 5 %%); re-seeded walkers restart on data frames, "
                        "so such a run can look better than it is")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from latentlab.compare import compare_latent, plot_comparison, scoring_frames
    from latentlab.data import load
    from latentlab.io import atomic_output, output_path
    from latentlab.simulation import dataset_name, load_simulation
    from latentlab.validation import fail

    torch.set_num_threads(1)
    plot = output_path(args.plot, "plot", overwrite=args.overwrite, inputs=[args.sim, args.reference]) if args.plot else None
    if not 0.0 <= args.burn_in < 1.0:
        fail("--burn-in", f"got {args.burn_in}", "give a fraction in [0, 1)")
    sim = load_simulation(args.sim)
    meta = sim["metadata"]
    health = run_health(meta)
    if health["problems"] and not args.ignore_diagnostics:
        fail("SIM", f"{args.sim} comes from an unhealthy run: {'; '.join(health['problems'])}",
             "simulate again with a smaller --dt (or --metropolis), or pass --ignore-diagnostics")
    q = sim["Q"]
    if q.shape[0] == 0:
        fail("SIM", f"{args.sim} holds no records", "simulate for at least --record-every steps")
    q = q[int(args.burn_in * q.shape[0]):].reshape(-1, q.shape[-1])
    ds = load(args.reference)
    spec = args.spec or meta.get("map")
    if args.spec is None and meta.get("map_definition"):
        from latentlab.maps.spec import map_from_dict

        cg_map = map_from_dict(meta["map_definition"])
    else:
        cg_map = ds.map(spec)
    if cg_map.n_cg != q.shape[1]:
        fail("--reference", f"the map {spec!r} has {cg_map.n_cg} coordinates but SIM has {q.shape[1]}",
             "compare with the data set the model was trained on")
    if cg_map.n_atoms is not None and cg_map.n_atoms != ds.n_atoms:
        trained_on = dataset_name(meta.get("dataset"))
        fail("--reference", f"{args.reference} has {ds.n_atoms} atoms but {args.sim} was simulated in a map of a "
             f"{cg_map.n_atoms}-atom system ({spec}" + (f", model trained on {trained_on})" if trained_on else ")"),
             "compare with a data set of the same system (the one the model was trained on)")
    frames, scoring = scoring_frames(meta.get("training_frames"), ds, args.against)
    ref = cg_map.map_frames(ds.positions[frames]).numpy()
    weights = None if ds.weights is None else ds.weights[frames]
    result = compare_latent(q, ref, names=cg_map.names, periodic=cg_map.periodic, bins=args.bins,
                            reference_weights=weights)
    result.update(scoring)
    result.update({"sim": args.sim, "reference": args.reference, "map": spec, "burn_in_fraction": args.burn_in,
                   "convention": meta.get("convention"), "temperature": meta.get("temperature"), **health})
    if plot:
        with atomic_output(plot) as tmp:
            title = (f"{ds.name}: ground truth vs model ({meta.get('convention')}), JS ratio {result['ratio']:.2f}")
            plot_comparison(q, ref, names=cg_map.names, periodic=cg_map.periodic, units=cg_map.units, out=tmp,
                            title=title, kT=None)
        result["plot"] = plot
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"reference {args.reference} ({result['n_reference']} frames: {result['against']}), {result['n_samples']} samples, "
              f"binning: {result['binning']['kind']}, {result['binning']['bins_per_coordinate']} bins per coordinate")
        print(f"js_divergence   {result['js_divergence']:.5f}")
        print(f"js_noise_floor  {result['js_noise_floor']:.5f}")
        print(f"ratio           {result['ratio']:.3f}")
        print(f"kl              {result['kl']:.5f}")
        for name, w in result["wasserstein"].items():
            print(f"wasserstein {name:8s} {w:.4g} (noise floor {result['wasserstein_noise_floor'][name]:.4g})")
    return 0


def run_health(meta: dict, max_reseeded: float = 0.01, max_temperature_error: float = 0.05) -> dict:
    """Re-seeded fraction and kinetic temperature of a SIM file's run, and what is wrong with them (if anything)."""
    d = meta.get("diagnostics") or {}
    steps, walkers = d.get("steps") or meta.get("steps_done") or 0, meta.get("walkers") or 0
    frac = d.get("reseeded_fraction")
    if frac is None:
        frac = d.get("reseeded", 0) / (steps * walkers) if steps and walkers else 0.0
    ratio = d.get("kinetic_temperature_ratio")
    stderr = d.get("kinetic_temperature_stderr")
    if stderr is None or not math.isfinite(stderr):  # files of 0.1.0: independent walkers and records as a bound
        n = max(1, len(meta.get("names") or [1])) * max(1, walkers) * max(1, steps // max(1, meta.get("record_every") or 1))
        stderr = math.sqrt(2.0 / n)
    problems = []
    if frac > max_reseeded:
        problems.append(f"{frac:.1%} of the walker-steps were re-seeded (allowed {max_reseeded:.0%})")
    if ratio is not None and not abs(ratio - 1.0) <= max_temperature_error + 3.0 * stderr:
        problems.append(f"the kinetic temperature was {ratio:.3f} x the target (allowed +-{max_temperature_error:.0%})")
    return {"reseeded_fraction": float(frac), "kinetic_temperature_ratio": ratio, "problems": problems}
