"""``latentlab plot DATA [--map SPEC] --out PNG``: ground-truth latent histograms."""

from __future__ import annotations

from latentlab.cli._data_args import add_data_arguments, load_data, map_spec, output_file


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="plot 1-D marginals and 2-D free-energy surfaces (kT) of a CG map on a data set",
                              description="Ground-truth latent histograms of DATA under a CG map (default: the data set's map).")
    add_data_arguments(p)
    p.add_argument("--map", default=None, help="map spec, e.g. 'dihedrals:phi-psi' (default: the data set's default map)")
    p.add_argument("--out", required=True, help="output PNG (.png added when there is no extension)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--bins", type=int, default=60, help="histogram bins per axis (default 60)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from latentlab.data.plotting import plot_latent_histograms
    from latentlab.io import atomic_output

    torch.set_num_threads(1)
    if args.bins < 2:
        raise ValueError(f"--bins: got {args.bins}. Fix: pass --bins 2 or more")
    out = output_file(args.out, "plot", args)
    ds = load_data(args)
    spec = map_spec(args.map, ds)
    ds.map(spec)  # a bad spec fails here, before any plotting
    with atomic_output(out, suffix=".png") as tmp:
        plot_latent_histograms(ds, spec, tmp, bins=args.bins)
    print(f"wrote {out}")
    return 0
