"""``latentlab demo three-atom``: latent Langevin vs exact answers on the three-atom system."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("demo", help="run a built-in demonstration (three-atom: latent Langevin vs exact answers)",
                       description="""
        Sample the three-atom system's (r1, r2, cos) by latent Langevin dynamics with the exact PMF, for V in
        the 'consistent' and the 'eq9' convention (eq. 9 of Bruce et al.), and compare with exact moments.""")
    p.add_argument("name", choices=["three-atom"], help="which demonstration")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--walkers", type=int, default=2000, help="number of walkers (default 2000)")
    p.add_argument("--dt", type=float, default=0.002, help="time step in ps (default 0.002)")
    p.add_argument("--gamma", type=float, default=50.0, help="friction in amu/ps (default 50)")
    p.add_argument("--production", type=float, default=6.0, help="production length in ps (default 6)")
    p.add_argument("--burn-in", type=float, default=1.5, help="burn-in length in ps (default 1.5)")
    p.add_argument("--metropolis", action="store_true", help="Metropolis-corrected (GHMC) steps")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these small batched ops run fastest on one thread, and "
                        "more threads slow down badly when another job shares the cores)")

    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from latentlab.demo import format_table, three_atom_demo
    from latentlab.validation import fail

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.walkers < 2:
        fail("--walkers", f"got {args.walkers}", "use at least 2 walkers")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device", "CUDA was asked for but torch sees no CUDA device", "use --device cpu")
    result = three_atom_demo(n_walkers=args.walkers, dt=args.dt, gamma=args.gamma, production=args.production,
                             burn_in=args.burn_in, metropolis=args.metropolis, device=args.device, seed=args.seed,
                             progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0
