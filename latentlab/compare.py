"""Compare latent samples with a reference: divergences with the reference's own noise floor, and figures.

:func:`compare_latent` histograms both sets on the same grid and reports

* ``js_divergence``: Jensen-Shannon divergence (natural log, in [0, ln 2])
  between the samples and the whole reference;
* ``js_noise_floor``: the same divergence between the first and the second
  half of the reference, split in time (not shuffled, so slow correlations
  in the reference count as noise, as they should);
* ``ratio = js_divergence / js_noise_floor``: ~1 means the model is as close to
  the data as the data is to itself.  A perfect model scores well below 1: the samples
  are compared with all N reference frames, the floor compares two halves of N/2, so
  to leading order the ratio of a perfect model is 1/4 (independent draws from a known
  2-D density, 12,500 reference frames, 30 x 30 bins: 0.30-0.38);
* ``kl``: ``KL(reference || samples)`` with half a count added to every bin
  of the samples (so empty bins stay finite);
* ``wasserstein``: 1-D Wasserstein-1 distance per coordinate (in that
  coordinate's unit; periodic coordinates are cut at the least populated
  angle of the reference before comparing);
* ``binning``: how the histograms were made.

Binning: the joint histogram of all coordinates when ``n_cg <= 3`` (else the
mean over all 2-D marginals); periodic coordinates on (-pi, pi], others on the
reference range widened by 5 % on each side; samples outside that range fall
into one extra overflow bin, so mass where the reference has none is
penalised rather than dropped.  Default bins per coordinate: 50 (1-D),
30 (2-D), 10 (3-D), 16 (2-D marginals of more coordinates): with ~10^4
correlated reference frames, finer grids make the noise floor so large that
real differences hide under it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from latentlab.binning import latent_box, regular_edges
from latentlab.validation import fail


def default_bins(n_cg: int) -> int:
    return {1: 50, 2: 30, 3: 10}.get(n_cg, 16)


def marginal_edges(reference, periodic, bounds=None, bins: int | None = None) -> list[np.ndarray]:
    """Bin edges of each coordinate's own (1-D) histogram, laid out as :func:`compare_latent` lays out its grid.

    Periodic coordinates span (-pi, pi]; the others the reference's range widened by 5 % on each
    side (:func:`latentlab.binning.latent_box`), cut to the coordinate's bounds.  Used by live
    histograms (the dashboard's, :class:`latentlab.simulation.HistogramReporter`).

    Parameters
    ----------
    reference : array, shape=(n_frames, n_cg)
    periodic : sequence of bool
    bounds : sequence of (lo, hi) or None, optional
    bins : int, optional
        Bins per coordinate (default ``default_bins(1)`` = 50).

    Returns
    -------
    list of np.ndarray, one of shape=(bins + 1,) per coordinate
    """
    from latentlab.binning import latent_box, regular_edges

    lo, hi = latent_box(reference, periodic, bounds, pad=0.05)
    return regular_edges(lo, hi, default_bins(1) if bins is None else bins)


def _as_2d(x, argument):
    try:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    except (TypeError, ValueError):
        fail(argument, "could not be read as numbers", "pass an array of shape (n, n_cg)")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2:
        fail(argument, f"has shape {a.shape}", "pass an array of shape (n, n_cg) with at least 2 rows")
    if not np.isfinite(a).all():
        fail(argument, "has NaN or infinite values", "drop non-finite samples first")
    return a


def _edges(reference, periodic, bins):
    """The comparison grid: the reference's box widened by 5 % per side (whole circle when periodic)."""
    lo, hi = latent_box(reference, periodic, pad=0.05)
    return regular_edges(lo, hi, bins)


def _wrap(x, periodic):
    x = x.copy()
    for d, p in enumerate(periodic):
        if p:
            x[:, d] = np.remainder(x[:, d] + math.pi, 2 * math.pi) - math.pi
    return x


def _histogram(x, edges, weights=None):
    """Normalised histogram on ``edges`` plus one overflow bin (flattened); ``weights (n,)`` optional."""
    h, _ = np.histogramdd(x, bins=edges, weights=weights)
    h = h.ravel()
    total = x.shape[0] if weights is None else float(np.sum(weights))
    # with float weights the overflow can come out as a rounding error below 0 (a NaN in the divergences)
    return np.append(h, max(total - h.sum(), 0.0)) / total


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats) of two normalised histograms."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / m), 0.0)
        b = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(0.5 * (a.sum() + b.sum()))


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, pseudo: float = 0.5) -> float:
    """``KL(p || q)`` (nats) from counts, with ``pseudo`` counts added to every bin of q."""
    p = p_counts / p_counts.sum()
    q = (q_counts + pseudo) / (q_counts.sum() + pseudo * q_counts.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(p > 0, p * np.log(p / q), 0.0).sum())


def _wasserstein_1d(a, b, periodic, wa=None, wb=None):
    from scipy.stats import wasserstein_distance

    if periodic:
        hist, e = np.histogram(b, bins=72, range=(-math.pi, math.pi), weights=wb)
        cut = e[np.argmin(hist)]
        a = np.remainder(a - cut, 2 * math.pi)
        b = np.remainder(b - cut, 2 * math.pi)
    return float(wasserstein_distance(a, b, wa, wb))


def compare_latent(samples, reference, names=None, periodic=None, bins: int | None = None,
                   reference_weights=None) -> dict:
    """Distance between latent samples and a reference set, with the reference's noise floor.

    Parameters
    ----------
    samples : array, shape=(n, n_cg)
        Model samples (e.g. every walker's recorded Q after burn-in, flattened).
    reference : array, shape=(m, n_cg)
        Ground truth in time order (the noise floor splits it into halves in time).
    names : sequence of str, optional
    periodic : sequence of bool, optional
        Periodic coordinates (rad) are wrapped to (-pi, pi] and binned over the full circle.
    bins : int, optional
        Bins per coordinate (default: see the module docstring).
    reference_weights : array, shape=(m,), optional
        Statistical weights of the reference frames (e.g. importance weights of flow samples); the
        histograms, the noise floor and KL use them (the 1-D Wasserstein distances do too).

    Returns
    -------
    dict
        ``js_divergence``, ``js_noise_floor``, ``ratio``, ``kl``, ``wasserstein`` (name -> value),
        ``wasserstein_noise_floor``, ``binning``, ``n_samples``, ``n_reference``, ``names``.
    """
    x = _as_2d(samples, "samples")
    r = _as_2d(reference, "reference")
    n = r.shape[1]
    if x.shape[1] != n:
        fail("samples", f"has {x.shape[1]} coordinates but reference has {n}", "compare the same CG coordinates")
    names = list(names) if names is not None else [f"q{i}" for i in range(n)]
    periodic = [False] * n if periodic is None else [bool(p) for p in periodic]
    if len(names) != n or len(periodic) != n:
        fail("names", f"names/periodic have {len(names)}/{len(periodic)} entries for {n} coordinates",
             "give one per coordinate")
    if r.shape[0] < 4:
        fail("reference", f"has {r.shape[0]} frames", "give at least 4 reference frames (it is split in halves)")
    x, r = _wrap(x, periodic), _wrap(r, periodic)
    w = None if reference_weights is None else np.asarray(reference_weights, dtype=np.float64).reshape(-1)
    if w is not None and (w.shape[0] != r.shape[0] or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0):
        fail("reference_weights", f"has shape {w.shape} or bad values for {r.shape[0]} reference frames",
             "give one finite weight >= 0 per reference frame, not all 0")
    joint = n <= 3
    nb = int(bins) if bins is not None else default_bins(n if joint else 4)
    if nb < 2:
        fail("bins", f"got {bins}", "use at least 2 bins per coordinate")
    groups = [tuple(range(n))] if joint else list(itertools.combinations(range(n), 2))
    half = r.shape[0] // 2
    js, floor, kl = [], [], []
    for grp in groups:
        e = _edges(r[:, grp], [periodic[i] for i in grp], nb)
        hx, hr = _histogram(x[:, grp], e), _histogram(r[:, grp], e, w)
        h1 = _histogram(r[:half][:, grp], e, None if w is None else w[:half])
        h2 = _histogram(r[half:][:, grp], e, None if w is None else w[half:])
        js.append(js_divergence(hx, hr))
        floor.append(js_divergence(h1, h2))
        kl.append(kl_divergence(hr * r.shape[0], hx * x.shape[0]))
    js_v, floor_v = float(np.mean(js)), float(np.mean(floor))
    wh = (None, None) if w is None else (w[:half], w[half:])
    wass = {nm: _wasserstein_1d(x[:, d], r[:, d], periodic[d], None, w) for d, nm in enumerate(names)}
    wass_floor = {nm: _wasserstein_1d(r[:half, d], r[half:, d], periodic[d], *wh) for d, nm in enumerate(names)}
    binning = {"kind": "joint" if joint else "mean over 2-D marginals", "bins_per_coordinate": nb,
               "ranges": [[-math.pi, math.pi] if periodic[d] else [float(v) for v in _edges(r[:, [d]], [False], nb)[0][[0, -1]]]
                          for d in range(n)],
               "overflow_bin": True, "log": "natural (nats)",
               "noise_floor": "first vs second half of the reference in time"}
    return {"js_divergence": js_v, "js_noise_floor": floor_v,
            "ratio": js_v / floor_v if floor_v > 0 else math.inf, "kl": float(np.mean(kl)),
            "wasserstein": wass, "wasserstein_noise_floor": wass_floor, "binning": binning,
            "n_samples": int(x.shape[0]), "n_reference": int(r.shape[0]), "names": names, "periodic": periodic,
            "reference_weighted": w is not None}


# ---------------------------------------------------------------------------- what to score against
AGAINST = ("auto", "holdout", "all")


def scoring_frames(training_frames: dict | None, dataset, against: str = "auto") -> tuple[np.ndarray, dict]:
    """Frame indices of ``dataset`` to score a model against, and a description for reports.

    Parameters
    ----------
    training_frames : dict or None
        The model's record of its split (``model.training["frames"]``: ``n_frames``, ``train``, ``validation``,
        ``holdout`` as ``[start, stop)`` ranges), or None for models without one.
    dataset : Dataset
        The reference.  For ``holdout`` it must be the data set the model was trained on (same frame count).
    against : {"auto", "holdout", "all"}
        ``auto``: the hold-out frames when the model has any, else all frames.

    Returns
    -------
    frames : np.ndarray, shape=(n_scored,), int
        In time order; the noise floor compares their first and second half.
    info : dict
        ``against`` (what was used), ``scored_frames``, ``training_frames`` (frames the model was fit on, or None).
    """
    from latentlab.training.splits import ranges_to_indices

    if against not in AGAINST:
        fail("--against", f"got {against!r}", f"use one of {', '.join(AGAINST)}")
    record = training_frames or {}
    held = ranges_to_indices(record.get("holdout") or [])
    trained = None if not record else int(len(ranges_to_indices(record.get("train") or []))
                                          + len(ranges_to_indices(record.get("validation") or [])))
    if against == "auto":
        against = "holdout" if len(held) else "all"
    if against == "holdout":
        if not len(held):
            fail("--against", "the model was trained on every frame (no hold-out recorded)",
                 "train with --holdout FRACTION to keep frames for scoring, or compare --against all")
        if int(record.get("n_frames", -1)) != dataset.n_frames:
            fail("--reference", f"the model's hold-out frames refer to a data set of {record.get('n_frames')} frames, "
                 f"this one has {dataset.n_frames}", "pass the data set the model was trained on, or --against all")
        frames = held
    else:
        frames = np.arange(dataset.n_frames)
    return frames, {"against": against, "scored_frames": int(len(frames)), "training_frames": trained}


# ---------------------------------------------------------------------------- figures
def plot_comparison(samples, reference, names=None, periodic=None, units=None, out: str | None = None,
                    title: str | None = None, kT: float | None = None, bins: int = 50, stride: int | None = None):
    """Ground truth and model side by side; returns the matplotlib figure (and writes ``out`` if given).

    * 2 coordinates (e.g. phi/psi of alanine dipeptide): free-energy surfaces
      ``-ln p`` in kT (kJ/mol if ``kT`` is given) for reference and model, and their difference.
    * 3 or more coordinates (Fig. 1 of Bruce et al. for chignolin, ``(r1, r2, cos)``):
      2-D probability histograms of every pair, reference row above model row,
      with strided reference points in red.
    * 1 coordinate: both free-energy profiles on one axis.
    """
    import matplotlib

    if out is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentlab.data.plotting import free_energy_1d, free_energy_2d

    x = _as_2d(samples, "samples")
    r = _as_2d(reference, "reference")
    n = r.shape[1]
    names = list(names) if names is not None else [f"q{i}" for i in range(n)]
    periodic = [False] * n if periodic is None else [bool(p) for p in periodic]
    units = list(units) if units is not None else [""] * n
    x, r = _wrap(x, periodic), _wrap(r, periodic)
    scale, eunit = (kT, "kJ/mol") if kT else (1.0, "kT")
    label = [f"{nm} [{u}]" if u and u != "1" else nm for nm, u in zip(names, units)]

    box_lo, box_hi = latent_box(r, periodic, pad=0.05)

    def rng(d):
        return (float(box_lo[d]), float(box_hi[d]))

    if n == 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for data, lab in ((r, "ground truth"), (x, "model")):
            c, f = free_energy_1d(data[:, 0], bins=bins, range_=rng(0))
            ax.plot(c, f * scale, label=lab)
        ax.set_xlabel(label[0]); ax.set_ylabel(f"free energy [{eunit}]"); ax.legend()
    elif n == 2:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        ranges = [rng(0), rng(1)]
        surfaces = []
        for ax, data, lab in ((axes[0], r, "ground truth"), (axes[1], x, "model")):
            xe, ye, f = free_energy_2d(data[:, 0], data[:, 1], bins=bins, range_=ranges)
            surfaces.append(f)
            im = ax.pcolormesh(xe, ye, (f * scale).T, cmap="viridis", vmax=8 * scale)
            ax.set_title(f"{lab}: -ln p [{eunit}]"); ax.set_xlabel(label[0]); ax.set_ylabel(label[1])
            fig.colorbar(im, ax=ax)
        diff = (surfaces[1] - surfaces[0]) * scale
        im = axes[2].pcolormesh(xe, ye, diff.T, cmap="coolwarm", vmin=-2 * scale, vmax=2 * scale)
        axes[2].set_title(f"model - ground truth [{eunit}]"); axes[2].set_xlabel(label[0]); axes[2].set_ylabel(label[1])
        fig.colorbar(im, ax=axes[2])
    else:
        pairs = list(itertools.combinations(range(n), 2))[:6]
        fig, axes = plt.subplots(2, len(pairs), figsize=(4.3 * len(pairs), 7.5), squeeze=False)
        stride = stride or max(1, r.shape[0] // 400)
        for col, (i, j) in enumerate(pairs):
            ranges = [rng(i), rng(j)]
            hr, xe, ye = np.histogram2d(r[:, i], r[:, j], bins=bins, range=ranges, density=True)
            hx, _, _ = np.histogram2d(x[:, i], x[:, j], bins=bins, range=ranges, density=True)
            vmax = max(hr.max(), hx.max())
            for row, (h, lab) in enumerate(((hr, "ground truth"), (hx, "model"))):
                ax = axes[row, col]
                im = ax.pcolormesh(xe, ye, h.T, cmap="viridis", vmin=0, vmax=vmax)
                ax.scatter(r[::stride, i], r[::stride, j], s=2, c="red", alpha=0.5, linewidths=0)
                ax.set_xlabel(label[i]); ax.set_ylabel(label[j]); ax.set_title(f"{lab}: p({names[i]}, {names[j]})")
                fig.colorbar(im, ax=ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return fig
