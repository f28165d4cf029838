"""Boxes, grids and bins in latent space: the one place that decides where a histogram or a table lives.

Every binned quantity of latentlab (the comparison histograms, the dashboard's live histograms, the
effective-mass and data-support tables, the relative-entropy quadrature grid) is laid out by
:func:`latent_box` and :func:`regular_grid`:

* a periodic coordinate (a dihedral, rad) always spans the whole circle ``[-pi, pi)``;
* any other coordinate spans the data range widened by ``pad`` times that range on each side,
  cut to the coordinate's bounds (a cosine never leaves ``[-1, 1]``);
* a coordinate that does not vary gets a box of width 1 around its value (so a grid never has zero width).

Arrays: ``Q`` has shape ``(n_frames, n_cg)`` in the units of each coordinate.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from latentlab.validation import fail


def _as_numpy(Q) -> np.ndarray:
    if isinstance(Q, torch.Tensor):
        Q = Q.detach().cpu().numpy()
    q = np.asarray(Q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] == 0:
        fail("Q", f"has shape {q.shape}", "pass CG coordinates of shape (n_frames, n_cg) with at least one frame")
    return q


def latent_box(Q, periodic: Sequence[bool], bounds: Sequence | None = None, pad: float = 0.0):
    """Lower and upper edge of the box that holds the data ``Q``, one per coordinate.

    Parameters
    ----------
    Q : array, shape=(n_frames, n_cg)
    periodic : sequence of bool, length n_cg
        Periodic coordinates (rad) get ``[-pi, pi]``.
    bounds : sequence of (lo, hi) or None, optional
        Hard limits of each coordinate (the box is cut to them).
    pad : float
        Fraction of the data range added on each side of non-periodic coordinates.

    Returns
    -------
    lo, hi : np.ndarray, shape=(n_cg,)
    """
    q = _as_numpy(Q)
    n = q.shape[1]
    per = [bool(p) for p in periodic]
    bnd = list(bounds) if bounds is not None else [None] * n
    if len(per) != n or len(bnd) != n:
        fail("periodic", f"periodic/bounds have {len(per)}/{len(bnd)} entries for {n} coordinates", "give one per coordinate")
    lo, hi = q.min(0), q.max(0)
    for d in range(n):
        if per[d]:
            lo[d], hi[d] = -math.pi, math.pi
            continue
        width = hi[d] - lo[d]
        if width <= 0:
            lo[d], hi[d] = lo[d] - 0.5, hi[d] + 0.5
        else:
            lo[d], hi[d] = lo[d] - pad * width, hi[d] + pad * width
        if bnd[d] is not None:
            lo[d], hi[d] = max(lo[d], float(bnd[d][0])), min(hi[d], float(bnd[d][1]))
    return lo, hi


def regular_edges(lo, hi, bins: int) -> list[np.ndarray]:
    """Bin edges ``bins + 1`` per coordinate between ``lo`` and ``hi``."""
    if int(bins) < 1:
        fail("bins", f"got {bins}", "use at least 1 bin per coordinate")
    return [np.linspace(float(a), float(b), int(bins) + 1) for a, b in zip(lo, hi)]


def cell_centres(lo, hi, points: int) -> torch.Tensor:
    """Centres of a regular grid of ``points`` cells per coordinate, ``(points ** n_cg, n_cg)`` float64.

    All cells have the same volume, so a plain sum over the centres is a quadrature up to that volume.
    """
    axes = [torch.as_tensor(float(a) + (np.arange(int(points)) + 0.5) * (float(b) - float(a)) / int(points))
            for a, b in zip(lo, hi)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([t.reshape(-1) for t in mesh], dim=1).to(torch.float64)


def bin_index(Q: torch.Tensor, lo, hi, bins: int) -> torch.Tensor:
    """Flat index of the regular bin of every row of ``Q (n, n_cg)`` (clamped into the box), ``(n,)`` long."""
    lo_t = torch.as_tensor(np.asarray(lo), dtype=Q.dtype, device=Q.device)
    width = (torch.as_tensor(np.asarray(hi), dtype=Q.dtype, device=Q.device) - lo_t) / int(bins)
    idx = torch.clamp(((Q - lo_t) / width).long(), 0, int(bins) - 1)  # (n, N)
    flat = torch.zeros(Q.shape[0], dtype=torch.long, device=Q.device)
    for d in range(Q.shape[1]):
        flat = flat * int(bins) + idx[:, d]
    return flat


def bin_centre(flat: torch.Tensor, lo, hi, bins: int, n_cg: int) -> torch.Tensor:
    """Centres ``(len(flat), n_cg)`` of the bins with flat indices ``flat`` (inverse of :func:`bin_index`)."""
    lo_t = torch.as_tensor(np.asarray(lo), dtype=torch.float64)
    width = (torch.as_tensor(np.asarray(hi), dtype=torch.float64) - lo_t) / int(bins)
    idx = torch.zeros(len(flat), n_cg, dtype=torch.long)
    rest = flat.clone().cpu()
    for d in reversed(range(n_cg)):
        idx[:, d] = rest % int(bins)
        rest = rest // int(bins)
    return lo_t + (idx.to(torch.float64) + 0.5) * width


def binned_means(Q: torch.Tensor, values: torch.Tensor, periodic: Sequence[bool], bins: int, weights=None):
    """Weighted mean of ``values`` in every occupied regular bin of ``Q`` over the data box.

    Parameters
    ----------
    Q : torch.Tensor, shape=(n_frames, n_cg)
    values : torch.Tensor, shape=(n_frames, ...)
    periodic : sequence of bool
    bins : int
        Bins per coordinate.
    weights : array, shape=(n_frames,), optional
        Frame weights (default: all 1).

    Returns
    -------
    centres : (n_bins, n_cg), means : (n_bins, ...), counts : (n_bins,) (summed weights), width : (n_cg,), inverse : (n_frames,)
        ``inverse`` gives the occupied-bin index of every frame.
    """
    lo, hi = latent_box(Q, periodic)
    flat = bin_index(Q, lo, hi, bins)
    keys, inverse = torch.unique(flat, return_inverse=True)
    w = torch.ones(Q.shape[0], dtype=values.dtype) if weights is None else torch.as_tensor(weights, dtype=values.dtype)
    counts = torch.zeros(len(keys), dtype=values.dtype).index_add_(0, inverse, w)
    wv = values * w.reshape(-1, *([1] * (values.dim() - 1)))
    sums = torch.zeros((len(keys),) + tuple(values.shape[1:]), dtype=values.dtype).index_add_(0, inverse, wv)
    means = sums / counts.reshape(-1, *([1] * (values.dim() - 1)))
    width = torch.as_tensor((hi - lo) / int(bins), dtype=torch.float64)
    return bin_centre(keys, lo, hi, bins, Q.shape[1]), means, counts.to(torch.float64), width, inverse
