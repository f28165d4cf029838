"""Self-consistency of a data set's forces with its configurations.

For a 1-D coordinate ``xi = f(q)`` the potential of mean force can be
obtained two independent ways from the same frames:

1. from the histogram, ``A_hist(xi) = -kT ln p(xi)``;
2. by integrating the binned mean force ``dA/dxi = < B grad U - kT div B >_xi``
   (THEORY.md section 3) along xi, with ``grad U = -F`` from the data set.

They agree within statistical error only if positions and forces belong to the
same Boltzmann distribution at the stated temperature, with the right units,
the right sign (``F = -grad U``) and no missing constraint forces.  Errors are
jackknife estimates over contiguous blocks of frames (which also absorbs the
time correlation of the frames).

References
----------
Ciccotti, Kapral, Vanden-Eijnden, ChemPhysChem 6, 1809 (2005).
Kraemer et al., J. Chem. Theory Comput. 19, 8 (2023) (constraint-aware forces).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from latentlab.validation import fail


@dataclass
class ConsistencyResult:
    """Outcome of :func:`pmf_consistency` (energies in kJ/mol, arrays per bin).

    Attributes
    ----------
    centers : np.ndarray, shape=(n_bins,)
    counts : np.ndarray, shape=(n_bins,)
    well_sampled : np.ndarray of bool, shape=(n_bins,)
    pmf_hist, pmf_hist_err : np.ndarray, kJ/mol (NaN outside the well-sampled range)
    pmf_int, pmf_int_err : np.ndarray, kJ/mol (integrated binned mean force, aligned to pmf_hist per segment)
    mean_force, mean_force_err : np.ndarray, kJ/mol per unit of xi
    z : np.ndarray  (pmf_int - pmf_hist) / jackknife error of the difference
    kT : float
    """

    name: str
    unit: str
    centers: np.ndarray
    counts: np.ndarray
    well_sampled: np.ndarray
    pmf_hist: np.ndarray
    pmf_hist_err: np.ndarray
    pmf_int: np.ndarray
    pmf_int_err: np.ndarray
    diff_err: np.ndarray
    mean_force: np.ndarray
    mean_force_err: np.ndarray
    z: np.ndarray
    kT: float

    @property
    def max_abs_z(self) -> float:
        z = self.z[np.isfinite(self.z)]
        return float(np.abs(z).max()) if z.size else float("nan")

    @property
    def chi2_per_bin(self) -> float:
        z = self.z[np.isfinite(self.z)]
        return float((z**2).mean()) if z.size else float("nan")

    @property
    def max_abs_diff_kT(self) -> float:
        d = (self.pmf_int - self.pmf_hist)[np.isfinite(self.z)]
        return float(np.abs(d).max() / self.kT) if d.size else float("nan")

    def summary(self) -> dict:
        return {"coordinate": self.name, "unit": self.unit, "bins_compared": int(np.isfinite(self.z).sum()),
                "max_abs_z": self.max_abs_z, "chi2_per_bin": self.chi2_per_bin,
                "max_abs_diff_kT": self.max_abs_diff_kT,
                "median_err_kT": float(np.nanmedian(self.diff_err[np.isfinite(self.z)]) / self.kT) if np.isfinite(self.z).any() else float("nan")}

    def plot(self, path: str, title: str = "") -> str:
        """Write the two PMFs (in kT) and the z-scores to ``path`` (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, axz) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        k = self.kT
        m = np.isfinite(self.z)
        ax.errorbar(self.centers[m], self.pmf_hist[m] / k, self.pmf_hist_err[m] / k, fmt="o", ms=3, label="-ln p (histogram)")
        ax.errorbar(self.centers[m], self.pmf_int[m] / k, self.pmf_int_err[m] / k, fmt="-", label="integrated mean force")
        ax.set_ylabel("PMF / kT")
        ax.legend()
        ax.set_title(title or f"self-consistency along {self.name}: chi2/bin {self.chi2_per_bin:.2f}, max|z| {self.max_abs_z:.2f}")
        axz.axhline(0, color="k", lw=0.5)
        axz.axhspan(-2, 2, color="0.9")
        axz.plot(self.centers[m], self.z[m], "o", ms=3)
        axz.set_ylabel("z")
        axz.set_xlabel(f"{self.name} ({self.unit})")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _segments(mask: np.ndarray, periodic: bool) -> list[np.ndarray]:
    """Runs of consecutive True bins (joined across the boundary if periodic)."""
    idx = np.nonzero(mask)[0]
    if idx.size == 0:
        return []
    runs, start = [], 0
    for k in range(1, idx.size + 1):
        if k == idx.size or idx[k] != idx[k - 1] + 1:
            runs.append(idx[start:k])
            start = k
    if periodic and len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == mask.size - 1:
        runs[0] = np.concatenate([runs[-1], runs[0]])
        runs.pop()
    return runs


def _estimates(xi, g, weights, edges, kT, segments):
    """PMF from histogram and integrated mean force for one (jackknife) weighting of the frames."""
    n_bins = edges.size - 1
    width = np.diff(edges)
    which = np.clip(np.searchsorted(edges, xi, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, weights=weights, minlength=n_bins)
    fsum = np.bincount(which, weights=weights * g, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mf = fsum / counts
        hist = -kT * np.log(counts / (counts.sum() * width))
    integ = np.full(n_bins, np.nan)
    for seg in segments:
        steps = 0.5 * (mf[seg[:-1]] + mf[seg[1:]]) * width[seg[0]]
        a = np.concatenate([[0.0], np.cumsum(steps)])
        a += np.mean(hist[seg] - a)  # align the free constant to the histogram over the segment
        integ[seg] = a
    return hist, integ, mf


def pmf_consistency(xi, mean_force_samples, kT: float, bins: int = 40, range_=None, periodic: bool = False,
                    min_count: int = 100, n_blocks: int = 20, name: str = "xi", unit: str = "") -> ConsistencyResult:
    """Compare ``-kT ln p(xi)`` with the integrated binned mean force.

    Parameters
    ----------
    xi : array, shape=(n_frames,)
        The 1-D coordinate per frame (time order, for the block jackknife).
    mean_force_samples : array, shape=(n_frames,)
        Instantaneous ``B grad U - kT div B`` per frame, kJ/mol per unit of xi
        (e.g. :func:`latentlab.forces.local_pmf_gradient`).
    kT : float, kJ/mol
    bins : int
    range_ : (float, float), optional
        Histogram range; default: (-pi, pi) if periodic else the data range.
    periodic : bool
        xi is an angle in (-pi, pi].
    min_count : int
        Bins with fewer frames are outside the well-sampled range.
    n_blocks : int
        Contiguous blocks for the jackknife error.
    """
    xi = np.asarray(xi, dtype=np.float64).reshape(-1)
    g = np.asarray(mean_force_samples, dtype=np.float64).reshape(-1)
    if xi.shape != g.shape:
        fail("mean_force_samples", f"has {g.size} values but xi has {xi.size}", "pass one value per frame")
    if xi.size < n_blocks * 10:
        fail("xi", f"has only {xi.size} frames", f"pass at least {n_blocks * 10} frames")
    if range_ is None:
        range_ = (-np.pi, np.pi) if periodic else (float(xi.min()), float(xi.max()) + 1e-12)
    edges = np.linspace(range_[0], range_[1], bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    which = np.clip(np.searchsorted(edges, xi, side="right") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    blocks = np.array_split(np.arange(xi.size), n_blocks)
    # a bin is well sampled if it has min_count frames and is visited in every block's complement
    well = counts >= min_count
    segments = [s for s in _segments(well, periodic) if s.size >= 3]
    well = np.zeros(bins, bool)
    for s in segments:
        well[s] = True
    ones = np.ones_like(xi)
    hist, integ, mf = _estimates(xi, g, ones, edges, kT, segments)
    reps = []
    for b in blocks:
        w = ones.copy()
        w[b] = 0.0
        reps.append(_estimates(xi, g, w, edges, kT, segments))
    reps_h = np.array([r[0] for r in reps])
    reps_i = np.array([r[1] for r in reps])
    reps_m = np.array([r[2] for r in reps])
    nb = len(blocks)

    def jk(a):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins outside the sampled range
            return np.sqrt((nb - 1) / nb * np.nansum((a - np.nanmean(a, axis=0)) ** 2, axis=0))

    diff_err = jk(reps_i - reps_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(well, (integ - hist) / diff_err, np.nan)
    mask = lambda a: np.where(well, a, np.nan)  # noqa: E731
    return ConsistencyResult(name=name, unit=unit, centers=centers, counts=counts, well_sampled=well,
                             pmf_hist=mask(hist), pmf_hist_err=mask(jk(reps_h)), pmf_int=mask(integ),
                             pmf_int_err=mask(jk(reps_i)), diff_err=mask(diff_err), mean_force=mask(mf),
                             mean_force_err=mask(jk(reps_m)), z=z, kT=kT)


def dataset_consistency(ds, spec: str, index: int = 0, bins: int = 40, min_count: int = 100, n_blocks: int = 20,
                        method: str = "mass-weighted", range_=None) -> ConsistencyResult:
    """:func:`pmf_consistency` for coordinate ``index`` of the map ``spec`` on data set ``ds``.

    Uses the constraint-free forces (:meth:`Dataset.constraint_free_forces`)
    and :func:`latentlab.forces.local_pmf_gradient` (with ``kT div B``).
    """
    import torch

    from latentlab.forces import local_pmf_gradient

    cg_map = ds.map(spec)
    pos, frc = ds.tensors(torch.float64)
    if frc is None:
        fail("data", f"{ds.name} has no forces", "use a data set with forces")
    xi = cg_map(pos)[:, index].detach().numpy()
    g = local_pmf_gradient(cg_map, pos, frc, torch.as_tensor(ds.masses), ds.kT, method=method)[:, index].detach().numpy()
    coord = cg_map.coordinates[index]
    return pmf_consistency(xi, g, ds.kT, bins=bins, periodic=coord.periodic, min_count=min_count, n_blocks=n_blocks,
                           name=coord.name, unit=coord.unit, range_=range_)
