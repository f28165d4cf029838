"""``latentlab simulate MODEL --walkers W --steps S --out SIM``: latent Langevin with a trained V."""

from __future__ import annotations

import json

from latentlab.cli._options import add_dynamics_options


def register(sub) -> None:
    p = sub.add_parser("simulate", help="latent Langevin dynamics with a trained potential",
                       description="""
        Run batched Langevin dynamics in the CG space with H = 1/2 P^T A(Q) P + V(Q): V from MODEL, A(Q) from
        the model file (closed form, or the binned mean of A(q) from the training data). Walkers start from data
        frames stored in the model. SIM is an .npz file with Q (n_records, n_walkers, n_cg), time and metadata;
        Ctrl-C writes what was done. The run fails (exit 2) when more than 1 % of the walker-steps blew up or
        the kinetic temperature is off by more than 5 % (the file is kept).""")
    p.add_argument("model", metavar="MODEL", help="model file from 'latentlab train'")
    p.add_argument("--walkers", type=int, required=True, help="number of walkers")
    p.add_argument("--steps", type=int, required=True, help="number of steps")
    p.add_argument("--out", required=True, metavar="SIM", help="output file (.npz is added when no extension is given)")
    p.add_argument("--overwrite", action="store_true", help="replace SIM if it exists (it is refused otherwise)")
    p.add_argument("--dt", type=float, default=0.002, help="time step in ps (default 0.002)")
    p.add_argument("--gamma", default=None,
                   help="friction in amu/ps (1/ps with --friction-model atomic), or auto: a friction rate of ~10/ps "
                        "(default: the model's calibrated friction when it has one, else auto)")
    p.add_argument("--temperature", type=float, default=None, help="K (default: the model's training temperature)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record-every", type=int, default=10, help="record Q every N steps (default 10)")
    p.add_argument("--data", default=None, help="data set for starting points (default: frames stored in the model)")
    p.add_argument("--metropolis", action="store_true", help="Metropolis-corrected (GHMC) steps")
    add_dynamics_options(p)
    p.add_argument("--max-reseeded", type=float, default=0.01,
                   help="largest fraction of walker-steps that may blow up and be re-seeded (default 0.01)")
    p.add_argument("--max-temperature-error", type=float, default=0.05,
                   help="largest relative error of the kinetic temperature (default 0.05)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from latentlab.forces.targets import resolve_device
    from latentlab.io import output_path
    from latentlab.model import CGModel
    from latentlab.simulation import ProgressReporter, SimFileReporter, Simulation
    from latentlab.validation import check_positive, fail

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("walkers", "steps", "record_every"):
        if getattr(args, name) < 1:
            fail("--" + name.replace("_", "-"), f"got {getattr(args, name)}", "use a positive integer")
    check_positive(args.dt, "--dt", "ps")
    out = output_path(args.out, "simulation", overwrite=args.overwrite, inputs=[args.model, args.data])
    device = resolve_device(args.device)
    gamma = args.gamma
    if gamma not in (None, "auto"):
        try:
            gamma = float(gamma)
        except ValueError:
            fail("--gamma", f"got {args.gamma!r}", "give a number (amu/ps, or 1/ps for atomic friction) or 'auto'")
    model = CGModel.load(args.model)
    start = "data"
    if args.data:
        start = _starts_from_data(model, args.data, args.walkers, args.seed)
    sim = Simulation(model, n_walkers=args.walkers, dt=args.dt, gamma=gamma, temperature=args.temperature,
                     device=device, seed=args.seed, start=start, metropolis=args.metropolis, dynamics=args.dynamics,
                     friction_model=args.friction_model)
    for note in sim.notes:
        print(f"note: {note}", file=sys.stderr)
    sim.reporters.append(SimFileReporter(out, every=args.record_every, metadata={"model": args.model}))
    if not args.no_progress and not args.json and sys.stderr.isatty():
        sim.reporters.append(ProgressReporter(args.steps, every=args.record_every))
    summary = sim.run(args.steps)
    problems = sim.problems(args.max_reseeded, args.max_temperature_error)
    summary.update(out=out, problems=problems)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        d = summary["diagnostics"]
        print(f"wrote {out}: {summary['steps_done']} steps x {args.walkers} walkers "
              f"({summary['simulated_ps']:.3g} ps each, {summary['dynamics']}, gamma {summary['gamma']:.3g} "
              f"{summary['gamma_units']}) in {summary['seconds']:.1f} s; "
              + (f"kinetic T / T = {d['kinetic_temperature_ratio']:.3f}, " if summary["dynamics"] == "langevin" else "")
              + f"re-seeded {d['reseeded']} "
              f"({d['reseeded_fraction']:.2%} of walker-steps)"
              + (" (interrupted: partial run saved)" if summary["interrupted"] else ""))
    if summary["interrupted"]:
        return 130
    if problems:
        for text in problems:
            print(f"latentlab simulate: error: {text}", file=sys.stderr)
        return 2
    return 0


def _starts_from_data(model, data: str, n_walkers: int, seed: int):
    """Random frames of a data set (drawn by their weights when it has them), mapped with the model's map:
    ``(n_walkers, n_cg)``."""
    import torch

    from latentlab.data import load

    ds = load(data)
    cg_map = model.cg_map(ds)
    gen = torch.Generator().manual_seed(int(seed))
    if ds.weights is None:
        idx = torch.randint(0, ds.n_frames, (int(n_walkers),), generator=gen)
    else:
        idx = torch.multinomial(torch.as_tensor(ds.weights, dtype=torch.float64), int(n_walkers), replacement=True,
                                generator=gen)
    return cg_map.map_frames(ds.positions[idx.numpy()])
