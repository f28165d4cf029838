"""``latentlab compare SIM --reference DATA``: latent histograms of a simulation vs the ground truth."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare a latent simulation with reference data (JS divergence vs noise floor)",
                       description="Histogram the simulated Q (after burn-in) and the reference's Q (the map stored "
                                   "in SIM) on one grid and report the Jensen-Shannon divergence, the reference's own "
                                   "noise floor (its first vs second half in time), their ratio, KL and 1-D "
                                   "Wasserstein distances. Binning: the joint histogram for up to 3 coordinates "
                                   "(10 bins per coordinate in 3-D, 30 in 2-D), the reference range +5 %, one overflow bin.")
    p.add_argument("sim", metavar="SIM", help="simulation file from 'latentlab simulate'")
    p.add_argument("--reference", required=True, metavar="DATA", help="built-in data set name or path")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="PNG", default=None, help="write ground truth and model side by side")
    p.add_argument("--burn-in", type=float, default=0.25,
                   help="fraction of the records dropped at the start (default 0.25)")
    p.add_argument("--bins", type=int, default=None, help="bins per coordinate (default 10 in 3-D, 30 in 2-D)")
    p.add_argument("--map", dest="spec", default=None, help="map spec (default: the one stored in SIM)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from latentlab.compare import compare_latent, plot_comparison
    from latentlab.data import load
    from latentlab.io import atomic_output
    from latentlab.simulation import load_simulation
    from latentlab.validation import fail

    torch.set_num_threads(1)
    sim = load_simulation(args.sim)
    meta = sim["metadata"]
    if not 0.0 <= args.burn_in < 1.0:
        fail("--burn-in", f"got {args.burn_in}", "give a fraction in [0, 1)")
    q = sim["Q"]
    if q.shape[0] == 0:
        fail("SIM", f"{args.sim} holds no records", "simulate for at least --record-every steps")
    q = q[int(args.burn_in * q.shape[0]):].reshape(-1, q.shape[-1])
    ds = load(args.reference)
    spec = args.spec or meta.get("map")
    cg_map = ds.map(spec)
    if cg_map.n_cg != q.shape[1]:
        fail("--reference", f"the map {spec!r} has {cg_map.n_cg} coordinates but SIM has {q.shape[1]}",
             "compare with the data set the model was trained on")
    ref = cg_map.map_frames(ds.positions).numpy()
    result = compare_latent(q, ref, names=cg_map.names, periodic=cg_map.periodic, bins=args.bins)
    result.update({"sim": args.sim, "reference": args.reference, "map": spec, "burn_in_fraction": args.burn_in,
                   "convention": meta.get("convention"), "temperature": meta.get("temperature")})
    if args.plot:
        with atomic_output(args.plot) as tmp:
            title = (f"{ds.name}: ground truth vs model ({meta.get('convention')}), JS ratio {result['ratio']:.2f}")
            plot_comparison(q, ref, names=cg_map.names, periodic=cg_map.periodic, units=cg_map.units, out=tmp,
                            title=title, kT=None)
        result["plot"] = args.plot
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"reference {args.reference} ({result['n_reference']} frames), {result['n_samples']} samples, "
              f"binning: {result['binning']['kind']}, {result['binning']['bins_per_coordinate']} bins per coordinate")
        print(f"js_divergence   {result['js_divergence']:.5f}")
        print(f"js_noise_floor  {result['js_noise_floor']:.5f}")
        print(f"ratio           {result['ratio']:.3f}")
        print(f"kl              {result['kl']:.5f}")
        for name, w in result["wasserstein"].items():
            print(f"wasserstein {name:8s} {w:.4g} (noise floor {result['wasserstein_noise_floor'][name]:.4g})")
    return 0
