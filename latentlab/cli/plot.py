"""``latentlab plot DATA [--map SPEC] --out PNG``: ground-truth latent histograms."""

from __future__ import annotations

from latentlab.cli._data_args import add_data_arguments, load_data


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="plot 1-D marginals and 2-D free-energy surfaces (kT) of a CG map on a data set",
                              description="Ground-truth latent histograms of DATA under a CG map (default: the data set's map).")
    add_data_arguments(p)
    p.add_argument("--map", default=None, help="map spec, e.g. 'dihedrals:phi-psi' (default: the data set's default map)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--bins", type=int, default=60, help="histogram bins per axis (default 60)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import torch

    from latentlab.data.plotting import plot_latent_histograms

    torch.set_num_threads(1)
    if args.bins < 2:
        raise ValueError(f"bins: got {args.bins}. Fix: pass --bins 2 or more")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"out: directory {out_dir} does not exist. Fix: create it first")
    ds = load_data(args)
    tmp = args.out + ".tmp.png"
    try:
        plot_latent_histograms(ds, args.map, tmp, bins=args.bins)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out}")
    return 0
