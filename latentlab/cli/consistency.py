"""``latentlab consistency DATA --map SPEC``: is the effective mass a function of Q alone?"""

from __future__ import annotations

from latentlab.cli._data_args import add_data_arguments, load_data, map_spec, output_file

import json


def register(sub) -> None:
    p = sub.add_parser("consistency", help="level-set consistency of A = J M^-1 J^T for a CG map",
                       description="""
        Measure how far the effective mass A(q) = J M^-1 J^T varies inside level sets of the CG map
        (docs/theory.md section 1): binned over Q from the data, and by random moves inside level sets. DATA is
        a built-in name (latentlab datasets) or a path.""")
    add_data_arguments(p, block=False)
    p.add_argument("--map", dest="spec", default=None, help="map spec, e.g. 'triangle:0,1,2' (default: the data set's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="write a plot of the spread over Q to this PNG file (.png added when there is no extension)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.add_argument("--frames", type=int, default=20000, help="use at most this many frames, evenly spaced (default 20000)")
    p.add_argument("--bins", type=int, default=20, help="bins per coordinate (default 20)")
    p.add_argument("--level-set-frames", type=int, default=200, help="frames the level-set moves start from (default 200)")
    p.add_argument("--step", type=float, default=0.01, help="RMS size of a level-set move in nm (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def plot_report(report, out: str) -> str:
    """Spread of A over the first two CG coordinates and the level-set spread distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from latentlab.io import atomic_output

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    spread = np.asarray(report.bin_spread)
    edges = report.bin_edges
    ax = axes[0]
    if spread.ndim == 1:
        centers = 0.5 * (edges[0][1:] + edges[0][:-1])
        ax.plot(centers, spread, "o-")
        ax.set_xlabel(report.names[0])
        ax.set_ylabel("binned spread of A")
        ax.set_yscale("log")
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            img = ax.pcolormesh(edges[0], edges[1], np.log10(spread.T), shading="flat", cmap="viridis")
        fig.colorbar(img, ax=ax, label="log10 binned spread of A")
        ax.set_xlabel(report.names[0])
        ax.set_ylabel(report.names[1])
    ax.set_title("spread of A within bins of Q")
    ax = axes[1]
    ls = report.level_set
    values = np.asarray(report.level_set_values)
    values = values[values > 0]
    if values.size:
        ax.hist(np.log10(values), bins=40)
    ax.set_xlabel("log10 ||A(q') - A(q)|| / ||A(q)||, q' in the level set of q")
    ax.set_ylabel("count")
    ax.set_title(f"level-set spread: median {ls['median']:.2e}, p95 {ls['p95']:.2e}")
    fig.suptitle(f"{report.map_spec}: {report.verdict()}")
    fig.tight_layout()
    with atomic_output(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def run(args) -> int:
    import numpy as np
    import torch

    from latentlab.consistency import check_consistency

    from latentlab.validation import fail

    torch.set_num_threads(1)
    for option, value in (("--frames", args.frames), ("--bins", args.bins), ("--level-set-frames", args.level_set_frames)):
        if value < 1:
            fail(option, f"got {value}", "pass a positive integer")
    if not args.step > 0 or args.step != args.step or args.step == float("inf"):
        fail("--step", f"got {args.step}", "pass a positive RMS move in nm, e.g. 0.01")
    plot = output_file(args.plot, "plot", args, option="--plot") if args.plot else None
    ds = load_data(args)
    spec = map_spec(args.spec, ds)
    if ds.n_frames > args.frames:
        ds = ds.select_frames(np.linspace(0, ds.n_frames - 1, args.frames).astype(int))
    cg_map = ds.map(spec)
    report = check_consistency(cg_map, torch.as_tensor(ds.positions, dtype=torch.float64), ds.masses, n_bins=args.bins,
                               n_level_set_frames=args.level_set_frames, step=args.step, seed=args.seed)
    if plot:
        plot_report(report, plot)
    out = report.to_dict()
    out["data"] = args.data
    out["frames"] = ds.n_frames
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        ls, bn = report.level_set, report.binned
        names = list(cg_map.names)
        shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]}"
        print(f"map {spec} ({len(names)} coordinates: {shown}) on {args.data} ({ds.n_frames} frames): "
              f"{report.verdict()} (score {report.score:.3e})")
        print(f"  level-set spread ({ls['n_frames']} frames x {ls['n_moves']} moves of {ls['step_nm']} nm): "
              f"median {ls['median']:.3e}, p95 {ls['p95']:.3e}, max {ls['max']:.3e}")
        if bn["median"] is not None:
            print(f"  binned spread ({bn['n_bins_used']} bins with >= {bn['min_count']} frames): "
                  f"median {bn['median']:.3e}, p95 {bn['p95']:.3e}, max {bn['max']:.3e}")
        print("  spreads are ||A - mean A||_F / ||mean A||_F; round-off (~1e-12) means A is a function of Q alone")
        if plot:
            print(f"  plot written to {plot}")
    return 0
