"""``latentlab plot DATA [--map SPEC] --out PNG``: ground-truth latent histograms."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="plot 1-D marginals and 2-D free-energy surfaces (kT) of a CG map on a data set",
                              description="Ground-truth latent histograms of DATA under a CG map (default: the data set's map).")
    p.add_argument("data", metavar="DATA", help="built-in name (see `latentlab datasets`) or path")
    p.add_argument("--map", default=None, help="map spec, e.g. 'dihedrals:phi-psi' (default: the data set's default map)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--bins", type=int, default=60, help="histogram bins per axis (default 60)")
    p.add_argument("--topology", default=None, help="topology for trajectories / .npy positions")
    p.add_argument("--temperature", type=float, default=None, help="K, for trajectories / .npy positions")
    p.add_argument("--block", default="primary", choices=["primary", "allatom"],
                   help="which block of a latentlab file (allatom: chignolin's all-atom frames)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import torch

    from latentlab.data import load
    from latentlab.data.plotting import plot_latent_histograms

    torch.set_num_threads(1)
    if args.bins < 2:
        raise ValueError(f"bins: got {args.bins}. Fix: pass --bins 2 or more")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"out: directory {out_dir} does not exist. Fix: create it first")
    ds = load(args.data, topology=args.topology, temperature=args.temperature, block=args.block)
    tmp = args.out + ".tmp.png"
    try:
        plot_latent_histograms(ds, args.map, tmp, bins=args.bins)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out}")
    return 0
