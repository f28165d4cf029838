"""``latentlab datasets [--json]``: the built-in data sets."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="list the built-in data sets (OpenMM sets and analytic systems)")
    p.add_argument("--json", action="store_true", help="print JSON (a list of objects)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from latentlab.data import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<24} {'frames':>7} {'atoms':>5} {'T/K':>6} {'forces':>6}  default map")
    for r in rows:
        print(f"{r['name']:<24} {r['frames']:>7} {r['atoms']:>5} {r['temperature']:>6.0f} {str(r['has_forces']):>6}  {r['default_map']}")
    return 0
