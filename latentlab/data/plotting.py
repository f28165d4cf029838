"""Ground-truth latent histograms: 1-D marginals and 2-D free-energy surfaces in kT.

Everything here needs only a data set and a CG map from
:func:`latentlab.maps.parse_map` (``map(positions) -> (n_frames, n_cg)`` with
``.names``, ``.units``, ``.periodic``).
"""

from __future__ import annotations

import numpy as np


def free_energy_1d(values: np.ndarray, bins: int = 60, range_=None, weights=None):
    """``(centers, F)`` with ``F = -ln p`` in kT, shifted to min 0; NaN where empty.

    ``values``: shape (n_frames,).
    """
    hist, edges = np.histogram(values, bins=bins, range=range_, weights=weights, density=True)
    with np.errstate(divide="ignore"):
        f = -np.log(hist)
    f = np.where(np.isfinite(f), f, np.nan)
    if np.isfinite(f).any():
        f -= np.nanmin(f)
    return 0.5 * (edges[1:] + edges[:-1]), f


def free_energy_2d(x: np.ndarray, y: np.ndarray, bins: int = 60, range_=None, weights=None):
    """``(x_edges, y_edges, F)`` with ``F = -ln p(x, y)`` in kT (shape (bins, bins), NaN where empty)."""
    hist, xe, ye = np.histogram2d(x, y, bins=bins, range=range_, weights=weights, density=True)
    with np.errstate(divide="ignore"):
        f = -np.log(hist)
    f = np.where(np.isfinite(f), f, np.nan)
    if np.isfinite(f).any():
        f -= np.nanmin(f)
    return xe, ye, f


def latent_values(ds, spec: str | None = None, batch: int = 20000):
    """Evaluate the map ``spec`` (default: the data set's) on every frame: ``(Q (n_frames, n_cg), map)``."""
    cg_map = ds.map(spec)
    return cg_map.map_frames(ds.positions, batch).numpy(), cg_map


def plot_latent_histograms(ds, spec: str | None = None, out: str = "latent.png", bins: int = 60, max_pairs: int = 3) -> str:
    """Write a PNG with the 1-D free energies of every CG coordinate and 2-D surfaces of the first pairs.

    Free energies are ``-ln p`` in kT at the data set's temperature (min set to 0), with the
    data set's frame weights when it has them.  The file is written as PNG whatever its name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q, cg_map = latent_values(ds, spec)
    names, units, periodic = cg_map.names, cg_map.units, cg_map.periodic
    n_cg = q.shape[1]
    pairs = [(i, j) for i in range(n_cg) for j in range(i + 1, n_cg)][:max_pairs]
    n_1d = min(n_cg, 6)
    ncols = max(n_1d, len(pairs), 1)
    nrows = 2 if pairs else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)

    def rng(i):
        return (-np.pi, np.pi) if periodic[i] else (float(np.min(q[:, i])), float(np.max(q[:, i])) + 1e-12)

    def label(i):
        return f"{names[i]} ({units[i]})" if units[i] and units[i] != "1" else names[i]

    for i in range(n_1d):
        c, f = free_energy_1d(q[:, i], bins=bins, range_=rng(i), weights=ds.weights)
        ax = axes[0, i]
        ax.plot(c, f, "-")
        ax.set_xlabel(label(i))
        ax.set_ylabel("F / kT")
    for k, (i, j) in enumerate(pairs):
        xe, ye, f = free_energy_2d(q[:, i], q[:, j], bins=bins, range_=[rng(i), rng(j)], weights=ds.weights)
        ax = axes[1, k]
        im = ax.pcolormesh(xe, ye, f.T, cmap="viridis", vmax=np.nanpercentile(f, 98) if np.isfinite(f).any() else None)
        fig.colorbar(im, ax=ax, label="F / kT")
        ax.set_xlabel(label(i))
        ax.set_ylabel(label(j))
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.axis("off")
    fig.suptitle(f"{ds.name}: {cg_map.spec or spec}  ({ds.n_frames} frames, {ds.temperature:g} K)", wrap=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
    return out
