"""``latentlab simulate MODEL --walkers W --steps S --out SIM``: latent Langevin with a trained V."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("simulate", help="latent Langevin dynamics with a trained potential",
                       description="Run batched Langevin dynamics in the CG space with H = 1/2 P^T A(Q) P + V(Q): V "
                                   "from MODEL, A(Q) from the model file (closed form, or the binned mean of A(q) from "
                                   "the training data). Walkers start from data frames stored in the model. SIM is an "
                                   ".npz file with Q (n_records, n_walkers, n_cg), time and metadata; Ctrl-C writes "
                                   "what was done.")
    p.add_argument("model", metavar="MODEL", help="model file from 'latentlab train'")
    p.add_argument("--walkers", type=int, required=True, help="number of walkers")
    p.add_argument("--steps", type=int, required=True, help="number of steps")
    p.add_argument("--out", required=True, metavar="SIM", help="output file (.npz)")
    p.add_argument("--dt", type=float, default=0.002, help="time step in ps (default 0.002)")
    p.add_argument("--gamma", default="auto",
                   help="friction in amu/ps, or auto (default): a friction rate of ~10/ps for the map's typical A")
    p.add_argument("--temperature", type=float, default=None, help="K (default: the model's training temperature)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record-every", type=int, default=10, help="record Q every N steps (default 10)")
    p.add_argument("--data", default=None, help="data set for starting points (default: frames stored in the model)")
    p.add_argument("--metropolis", action="store_true", help="Metropolis-corrected (GHMC) steps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from latentlab.potentials import load_model
    from latentlab.simulation import simulate_model
    from latentlab.training import resolve_device
    from latentlab.validation import fail

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("walkers", "steps", "record_every"):
        if getattr(args, name) < 1:
            fail("--" + name.replace("_", "-"), f"got {getattr(args, name)}", "use a positive integer")
    device = resolve_device(args.device)
    gamma = args.gamma
    if gamma != "auto":
        try:
            gamma = float(gamma)
        except ValueError:
            fail("--gamma", f"got {args.gamma!r}", "give a number in amu/ps or 'auto'")
    model = load_model(args.model)
    dataset = None
    if args.data:
        from latentlab.data import load

        dataset = load(args.data)
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    summary = simulate_model(model, args.out, n_walkers=args.walkers, n_steps=args.steps, dt=args.dt, gamma=gamma,
                             temperature=args.temperature, device=device, seed=args.seed,
                             record_every=args.record_every, dataset=dataset, metropolis=args.metropolis,
                             progress=progress, model_path=args.model)
    summary.pop("Q", None)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        d = summary["diagnostics"]
        print(f"wrote {args.out}: {summary['steps_done']} steps x {args.walkers} walkers "
              f"({summary['simulated_ps']:.3g} ps each, gamma {summary['gamma']:.3g} amu/ps) in {summary['seconds']:.1f} s; "
              f"kinetic T / T = "
              f"{d.get('kinetic_temperature_ratio', float('nan')):.3f}, re-seeded {d['reseeded']}"
              + (" (interrupted: partial run saved)" if summary["interrupted"] else ""))
    return 130 if summary["interrupted"] else 0
