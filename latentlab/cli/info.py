"""``latentlab info DATA [--json]``: what a data set holds."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="summarise a data set (built-in name or file)",
                              description="Summarise a data set: frames, atoms, temperature, forces, energies, topology, provenance.")
    p.add_argument("data", metavar="DATA", help="built-in name (see `latentlab datasets`) or path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--topology", default=None, help="topology for trajectories / .npy positions")
    p.add_argument("--temperature", type=float, default=None, help="K, for trajectories / .npy positions")
    p.add_argument("--block", default="primary", choices=["primary", "allatom"],
                   help="which block of a latentlab file (allatom: chignolin's all-atom frames)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from latentlab.data import load

    ds = load(args.data, topology=args.topology, temperature=args.temperature, block=args.block)
    info = ds.info()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
