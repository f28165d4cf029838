"""``latentlab info DATA [--json]``: what a data set holds."""

from __future__ import annotations

from latentlab.cli._data_args import add_data_arguments, load_data


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="summarise a data set (built-in name or file)",
                              description="Summarise a data set: frames, atoms, temperature, forces, energies, topology, provenance.")
    add_data_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json


    ds = load_data(args)
    info = ds.info()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
