"""``latentlab calibrate MODEL --reference DATA [--target ...] [--out MODEL2]``: the friction matching the kinetics."""

from __future__ import annotations

import json
import os

from latentlab.cli._options import add_dynamics_options, add_run_options

TARGET_HELP = """
    kinetic observable to match: slowest-timescale (default: the slowest MSM implied timescale at the
    reference's lag, on the reference's states), mfpt (mean first-passage times between --basins, --pairs), acf
    (integrated autocorrelation times of --coordinates)"""


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="calibrate the friction gamma so that the model's kinetics match a reference's",
        description="""
        Find the friction gamma (amu/ps; 1/ps for atomic friction) at which MODEL's latent dynamics (Langevin,
        or Brownian with --dynamics brownian) reproduce a kinetic observable of the reference trajectory: short
        simulations at several frictions (same seed and start points: common random numbers), a bracketing root
        search on ln gamma and its standard error (reference error and simulation noise). In the overdamped
        regime the observable grows with gamma; near and below the Kramers turnover it does not: --branch says
        which root to take. Afterwards an independent run at the calibrated gamma is compared with the reference
        on every observable (implied timescales, MFPTs, tau_int), used for the calibration or not. With --out
        the model is written with the calibrated friction, which 'latentlab simulate' then uses by default. See
        docs/kinetics.md.""")
    p.add_argument("model", metavar="MODEL", help="model file from 'latentlab train'")
    p.add_argument("--reference", metavar="DATA", required=True,
                   help="reference trajectory: data set with a time axis (built-in name or path) or a SIM file, "
                        "mapped with the model's map")
    p.add_argument("--target", default="slowest-timescale", choices=["slowest-timescale", "mfpt", "acf"],
                   help=TARGET_HELP)
    p.add_argument("--out", metavar="MODEL2", default=None,
                   help="write the calibrated model here (.pt is added when no extension is given); without it "
                        "nothing is written")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL2 if it exists")
    p.add_argument("--basins", default="auto",
                   help="basins for --target mfpt and for the comparison (default auto: the built-in set that fits "
                        "the coordinates; spec as in 'latentlab kinetics')")
    p.add_argument("--pairs", default=None,
                   help="first-passage pairs for --target mfpt, comma-separated A->B or A<->B (default: every pair "
                        "with 20 or more reference transitions)")
    p.add_argument("--coordinates", default=None,
                   help="coordinates for --target acf, comma-separated (default: all whose Sokal window the "
                        "reference reaches; several are combined by inverse-variance weights)")
    p.add_argument("--lag", type=float, default=None, metavar="PS",
                   help="MSM lag time in ps (default: the reference's own choice, as 'latentlab kinetics')")
    p.add_argument("--walkers", type=int, default=256, help="walkers per simulation (default 256; at least 8)")
    p.add_argument("--length", type=float, default=None, metavar="PS",
                   help="recorded ps per walker and simulation (default: 20 x the reference's observable, 40 to "
                        "2,000 reference frames)")
    p.add_argument("--dt", type=float, default=0.002,
                   help="time step in ps (default 0.002, as simulate; must divide the reference's frame spacing; "
                        "the calibrated gamma belongs to it)")
    p.add_argument("--seed", type=int, default=0, help="start points and noise of every simulation (default 0)")
    p.add_argument("--gamma-start", type=float, default=None,
                   help="first friction tried, amu/ps (1/ps for atomic friction) (default: the model's friction, "
                        "else auto)")
    p.add_argument("--gamma-range", default=None, metavar="LO,HI",
                   help="frictions searched, in gamma's units (default: a factor 1024 either side of the start)")
    p.add_argument("--branch", default="overdamped", choices=["overdamped", "underdamped"],
                   help="side of the Kramers turnover to take the root on (default overdamped)")
    p.add_argument("--max-evaluations", type=int, default=12, help="simulations at most for the search (default 12)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the independent run at the calibrated friction (no comparison of other observables)")
    p.add_argument("--check-length", type=float, default=None, metavar="PS",
                   help="ps per walker of that run (default 2 x --length)")
    p.add_argument("--clusters", type=int, default=50, help="k-means states of the reference MSM (default 50)")
    p.add_argument("--samples", type=int, default=100, help="Bayesian MSM samples (default 100)")
    add_dynamics_options(p)
    add_run_options(p, device=True, threads=True, json=True, progress="no progress bars")
    p.set_defaults(func=run)


def load_reference(path: str, model):
    """The reference as :class:`~latentlab.kinetics.Trajectories` in the model's coordinates, with clear errors."""
    from latentlab.kinetics import Trajectories
    from latentlab.validation import fail

    if os.path.isfile(path) and path.lower().endswith(".npz"):
        tr = Trajectories.from_simulation(path, burn_in=0.0)
        if tr.map_spec and model.map_spec and tr.map_spec != model.map_spec:
            fail("--reference", f"{path} was simulated in the map {tr.map_spec!r} but the model's map is "
                 f"{model.map_spec!r}", "calibrate against a trajectory in the model's coordinates")
        return tr
    from latentlab.data import load

    ds = load(path)
    name = ds.name or path
    if ds.time is None:
        fail("--reference", f"{name} has no time axis (it is a set of configurations, not a trajectory)",
             "calibrate against a trajectory: a data set from 'latentlab generate', or one imported with --dt")
    if getattr(ds, "weights", None) is not None:
        fail("--reference", f"{name} has per-frame weights (independent weighted samples, not a trajectory)",
             "calibrate against a trajectory from 'latentlab generate'")
    if abs(float(ds.temperature) - float(model.temperature)) > 1e-6 * float(model.temperature):
        fail("--reference", f"{name} is at {ds.temperature:g} K but the model at {model.temperature:g} K",
             "calibrate against data at the model's temperature")
    cg_map = model.cg_map(ds)
    reads = getattr(cg_map, "n_atoms", None)
    top = max(cg_map.atoms) + 1 if getattr(cg_map, "atoms", None) else None
    if (reads is not None and reads != ds.n_atoms) or (reads is None and top is not None and top > ds.n_atoms):
        fail("--reference", f"{name} has {ds.n_atoms} atoms but the model's map {model.map_spec!r} reads frames of "
             f"{reads or top} or more atoms: it is data of another system",
             "calibrate against data of the system the model was trained on")
    return Trajectories.from_dataset(ds, cg_map=cg_map)


def run(args) -> int:
    import sys

    import torch

    from latentlab.io import output_path
    from latentlab.kinetics.calibration import CalibrationCancelled, calibrate
    from latentlab.model import CGModel
    from latentlab.validation import check_positive, fail

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.walkers < 8:
        fail("--walkers", f"got {args.walkers}",
             "use at least 8 walkers (their spread gives the noise of each estimate)")
    if args.max_evaluations < 2:
        fail("--max-evaluations", f"got {args.max_evaluations}", "allow at least 2 simulations")
    check_positive(args.dt, "--dt", "ps")
    for name in ("length", "check_length", "lag", "gamma_start"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            fail("--" + name.replace("_", "-"), f"got {value}", "give a positive number")
    if args.clusters < 2:
        fail("--clusters", f"got {args.clusters}", "use 2 or more states")
    if args.samples < 0:
        fail("--samples", f"got {args.samples}", "use 0 or more posterior samples")
    gamma_range = None
    if args.gamma_range:
        try:
            gamma_range = [float(v) for v in args.gamma_range.split(",")]
        except ValueError:
            gamma_range = []
        if len(gamma_range) != 2 or not 0 < gamma_range[0] < gamma_range[1]:
            fail("--gamma-range", f"got {args.gamma_range!r}", "give LO,HI in gamma's units with 0 < LO < HI, e.g. 0.01,10")
    out = None
    if args.out:
        out = output_path(args.out, "model", overwrite=args.overwrite, inputs=[args.model, args.reference])
    from latentlab.forces.targets import resolve_device

    device = resolve_device(args.device)
    model = CGModel.load(args.model)
    reference = load_reference(args.reference, model)
    split = lambda text: None if text is None else [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
    progress = not args.no_progress and not args.json and sys.stderr.isatty()

    def log(event):  # one line per simulation when there is no progress bar (e.g. output to a log file)
        if event.get("event") == "evaluation" and not progress and not args.json:
            vals = ", ".join("nan" if v is None else f"{v:.4g}" for v in event["values_ps"])
            f, s = (float("nan") if event[k] is None else event[k] for k in ("f", "sigma_f"))
            print(f"gamma {event['gamma']:10.5g}: ln(model/reference) {f:+.3f} +- {s:.3f}; observables "
                  f"{vals} ps ({event['seconds']:.0f} s)", file=sys.stderr, flush=True)

    try:
        result = calibrate(model, reference, args.target, basins=args.basins, pairs=split(args.pairs),
                           coordinates=split(args.coordinates), lag_ps=args.lag, n_walkers=args.walkers,
                           length_ps=args.length, dt=args.dt, seed=args.seed, gamma_start=args.gamma_start,
                           gamma_range=gamma_range, branch=args.branch, max_evaluations=args.max_evaluations,
                           check=not args.no_check, check_length_ps=args.check_length, n_clusters=args.clusters,
                           n_samples=args.samples, device=device, progress=progress, callback=log,
                           dynamics=args.dynamics, friction_model=args.friction_model)
    except (KeyboardInterrupt, CalibrationCancelled):
        print("latentlab calibrate: interrupted; nothing written", file=sys.stderr)
        return 130
    written = None
    if result.converged and out:
        calibrated = result.apply(model)
        calibrated.training["calibration"].update(model_file=os.path.abspath(args.model),
                                                  reference_data=args.reference)
        written = calibrated.save(out)
    if args.json:
        d = result.to_dict()
        d.update(model=args.model, reference_data=args.reference, out=written)
        print(json.dumps(d, indent=1))
    else:
        print_result(result, args, written)
    if not result.converged:
        print(f"latentlab calibrate: error: {result.message}", file=sys.stderr)
        return 1
    return 0


def print_result(result, args, written) -> None:
    """The calibration as text: the search, gamma +- error, and every observable afterwards."""
    tgt = result.target
    ref = tgt.reference.trajectories
    print(f"== reference {ref.source or args.reference}: {ref.n_trajectories} trajectories, {ref.n_frames} frames "
          f"every {ref.dt_ps:g} ps")
    obs = ", ".join(f"{n} {v:.4g} ps (+-{100 * s:.1f} %)" for n, v, s in
                    zip(tgt.names, tgt.reference_ps, tgt.reference_log_sigma))
    extra = f" at lag {tgt.lag_ps:g} ps" if tgt.kind == "slowest-timescale" else ""
    print(f"target {tgt.kind}{extra}: {obs}")
    s = result.settings
    units = s["gamma_units"]
    print(f"search: {s['n_walkers']} walkers x {s['length_ps']:g} ps (+{s['burn_in_ps']:g} ps burn-in), "
          f"{s['dynamics']} dynamics, {s['friction_model']} friction, dt {s['dt']:g} ps, seed {s['seed']}, "
          f"{result.branch} branch")
    print(f"{'gamma (' + units + ')':>15s}  {'ln(model/ref)':>13s}  {'+-':>6s}  observables (ps)")
    for e in sorted(result.evaluations, key=lambda e: e["gamma"]):
        vals = ", ".join(f"{v:.4g}" for v in e["values_ps"])
        print(f"{e['gamma']:15.5g}  {e['f']:+13.3f}  {e['sigma_f']:6.3f}  {vals}")
    if not result.converged:
        print(f"no calibration: {result.message}")
    else:
        lo, hi = result.gamma_interval
        print(f"gamma = {result.gamma:.5g} +- {result.gamma_stderr:.2g} {units} (95 %: {lo:.4g} - {hi:.4g}); "
              f"d ln(observable) / d ln(gamma) = {result.sensitivity:.2f} +- {result.sensitivity_stderr:.2f}")
    chk = result.check
    if chk:
        print(f"== check: independent run at gamma {chk['gamma']:.5g} (seed {chk['seed']}, {chk['n_walkers']} "
              f"walkers x {chk['length_ps']:g} ps) vs the reference at lag {chk['lag_ps']} ps")
        print(f"{'observable':24s} {'reference':>20s} {'model':>20s} {'ratio':>7s} {'z':>6s}  used")
        for r in chk["rows"]:
            def fmt(v, e):
                if v is None:
                    return "-"
                return f"{v:.4g}" + (f" +- {e:.2g}" if e else "")
            label = {"slowest-timescale": "timescale", "mfpt": "MFPT", "acf": "tau_int"}[r["kind"]] + " " + r["name"]
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
            z = "-" if r["z"] is None else f"{r['z']:+.1f}"
            note = ""
            if r["kind"] == "slowest-timescale" and r.get("inside_reference_interval") is not None:
                note = " inside ref 95 %" if r["inside_reference_interval"] else " outside ref 95 %"
            ref_txt, mod_txt = fmt(r["reference"], r["reference_error"]), fmt(r["model"], r["model_error"])
            used = "yes" if r["used"] else "no"
            print(f"{label:24s} {ref_txt:>20s} {mod_txt:>20s} {ratio:>7s} {z:>6s}  {used}{note}")
    for w in result.warnings:
        print(f"note: {w}")
    if written:
        print(f"wrote {written}: friction {result.gamma:.5g} {units}, {s['dynamics']} dynamics, {s['friction_model']} "
              "friction ('latentlab simulate' uses them by default)")
    elif result.converged:
        print("nothing written (pass --out MODEL2 to store the calibrated friction)")
