"""Self-consistency of a data set's forces with its configurations.

For a 1-D coordinate ``xi = f(q)`` the potential of mean force can be
obtained two independent ways from the same frames:

1. from the histogram, ``A_hist(xi) = -kT ln p(xi)``;
2. by integrating the binned mean force ``dA/dxi = < B grad U - kT div B >_xi``
   (docs/theory.md section 3) along xi, with ``grad U = -F`` from the data set.

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

from latentlab.units import ANGSTROM_TO_NM, KCAL_TO_KJ
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


# ---------------------------------------------------------------------- force scale (unit check)

#: Unit conversions a force array can be off by: energy (kcal/kJ) and length (Angstrom/nm).
_ENERGY_UNITS = {"kJ/mol": 1.0, "kcal/mol": KCAL_TO_KJ}
_LENGTH_UNITS = {"nm": 1.0, "angstrom": ANGSTROM_TO_NM}

#: |ln s| within which the forces count as consistent with the stated temperature
#: (a 10 % configurational-temperature deviation, twice the kinetic-temperature
#: tolerance of ``simulate``, to leave room for the bias of finite-timestep Langevin data).
CONSISTENT_LOG = float(np.log(1.10))

#: |ln s - ln c| within which a unit factor c explains the forces (half the log distance
#: between the closest candidate factors 4.184 and 10, rounded down).
FACTOR_LOG = float(np.log(1.5))

#: Largest standard error of ln s for a conclusive check.
CONCLUSIVE_LOG_ERR = 0.1


@dataclass
class ForceScaleResult:
    """Outcome of :func:`force_scale`.

    ``scale`` is the factor s by which the stored forces must be multiplied to
    satisfy, at the stated temperature, the identity

        E[phi(xi) * s * dU/dxi] = kT E[phi'(xi) + phi(xi) div v]

    along each test coordinate xi (a distance between bonded atoms, or a
    Cartesian coordinate of a single particle): s = 1 for consistent data,
    4.184 for kcal/mol forces stored as kJ/mol, T_stated / T_true for
    a wrong temperature, negative for gradients stored as forces.

    Attributes
    ----------
    scale, scale_err : float
        Combined s and its block-jackknife standard error.
    coordinates : list of str
    per_coordinate, per_coordinate_err : np.ndarray, shape=(n_coordinates,)
    n_frames : int
    kT : float, kJ/mol
    rigid_groups : int
        Number of groups of atoms held rigid by constraints (found or given); their forces are summed.
    seconds : float
    verdict : str
        Set by :func:`check_forces` (see :func:`judge_force_scale`).
    """

    scale: float
    scale_err: float
    coordinates: list
    per_coordinate: np.ndarray
    per_coordinate_err: np.ndarray
    n_frames: int
    kT: float
    rigid_groups: int = 0
    seconds: float = 0.0
    verdict: str = ""

    @property
    def log_err(self) -> float:
        return float(self.scale_err / abs(self.scale)) if self.scale != 0 else float("inf")

    def summary(self) -> dict:
        return {"scale": float(self.scale), "scale_err": float(self.scale_err), "verdict": self.verdict,
                "coordinates": len(self.coordinates),
                "frames": self.n_frames, "rigid_groups": self.rigid_groups, "seconds": round(self.seconds, 3)}


def _constraint_groups(ds, bonds) -> np.ndarray:
    """Constraint group of each atom: given, found from rigid bonds, or each atom its own (aggregated forces)."""
    from latentlab.data.bonds import rigid_groups

    if ds.forces_aggregated:
        return np.arange(ds.n_atoms)
    if ds.constraint_group is not None:
        return np.asarray(ds.constraint_group)
    found = rigid_groups(ds.positions, bonds, ds.masses) if len(bonds) else None
    return np.arange(ds.n_atoms) if found is None else found


def _group_members(group: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(group, kind="stable")
    ids, starts = np.unique(group[order], return_index=True)
    return {int(g): members for g, members in zip(ids, np.split(order, starts[1:]))}


def _test_pairs(ds, group, bonds, max_coordinates: int) -> np.ndarray:
    """Pairs of group roots to test: bonds between groups, else each root's nearest root in frame 0."""
    pairs = np.array(sorted({tuple(sorted((int(group[i]), int(group[j])))) for i, j in bonds
                             if group[i] != group[j]}), dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        from scipy.spatial import cKDTree

        roots = np.unique(group)
        if len(roots) < 2:
            return pairs
        x0 = np.asarray(ds.positions[0, roots], dtype=np.float64)
        _, nn = cKDTree(x0).query(x0, k=2)
        pairs = np.array(sorted({tuple(sorted((int(roots[a]), int(roots[b])))) for a, b in enumerate(nn[:, 1])}),
                         dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return pairs
    # keep pairs that stay bound and are not rigid
    x = np.asarray(ds.positions[:: max(1, ds.n_frames // 500)], dtype=np.float64)
    r = np.linalg.norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], axis=-1)  # (S, P)
    med = np.median(r, axis=0)
    # rigid: relative spread < 1e-4 (constraints); bound: spread < 30 % and never twice the median apart
    # (bonds spread by ~3 %, the analytic three-atom springs by 17 %, a gas or liquid by ~50 %)
    spread = r.std(axis=0) / r.mean(axis=0)
    ok = (spread > 1e-4) & (spread < 0.3) & (r.max(axis=0) < 2.0 * med)
    pairs = pairs[ok]
    if len(pairs) > max_coordinates:
        pairs = pairs[np.unique(np.linspace(0, len(pairs) - 1, max_coordinates).astype(int))]
    return pairs


def _default_bonds(ds) -> np.ndarray:
    """Bonds to test, shape=(n_bonds, 2) int: the topology's, else inferred from masses and distances, else none."""
    if ds.topology is not None and ds.topology.n_bonds:
        return np.array([(a.index, b.index) for a, b in ds.topology.bonds], dtype=np.int64)
    if ds.n_atoms > 1:
        from latentlab.data.bonds import infer_bonds

        return infer_bonds(ds.positions, ds.masses).bonds
    return np.zeros((0, 2), dtype=np.int64)


def _cartesian_coordinates(ds):
    """Test coordinates of a single particle: its x, y, z (those that vary).

    Returns ``(xi, f, h, names)``: xi the coordinates (n_frames, n_coords) nm, f = v . grad U
    (n_frames, n_coords) kJ/mol/nm, h = div v (zero here), and the coordinate names.
    """
    xi = np.asarray(ds.positions[:, 0, :], dtype=np.float64)  # (F, 3)
    f = -np.asarray(ds.forces[:, 0, :], dtype=np.float64)  # v . grad U for v = e_x, e_y, e_z
    h = np.zeros_like(xi)
    keep = xi.std(axis=0) > 0
    names = [c for c, k in zip("xyz", keep) if k]
    return xi[:, keep], f[:, keep], h[:, keep], names


def _bond_coordinates(ds, pairs: np.ndarray, members: dict):
    """Test coordinates r(i-j) of atom pairs, each atom moving rigidly with its constraint group.

    Returns ``(xi, f, h, names)``: distances (n_frames, n_pairs) nm, f = v . grad U for the mass-weighted
    stretch v (n_frames, n_pairs) kJ/mol/nm, h = div v = 2 / r (n_frames, n_pairs) 1/nm, and the names.
    """
    roots = np.unique(pairs)
    col = {int(r): k for k, r in enumerate(roots)}
    # each root atom's group moves rigidly with it: total force and mass of the group
    forces = np.stack([np.asarray(ds.forces[:, members[int(r)]], dtype=np.float64).sum(axis=1) for r in roots], 1)
    mass = np.array([float(np.sum(ds.masses[members[int(r)]])) for r in roots])
    x = np.asarray(ds.positions[:, roots], dtype=np.float64)  # (F, R, 3)
    i, j = np.array([col[int(a)] for a in pairs[:, 0]]), np.array([col[int(b)] for b in pairs[:, 1]])
    d = x[:, i] - x[:, j]  # (F, P, 3)
    xi = np.linalg.norm(d, axis=-1)  # (F, P)
    u = d / xi[..., None]
    mi, mj = mass[i], mass[j]
    a, b = mj / (mi + mj), mi / (mi + mj)
    f = -((a[:, None] * forces[:, i] - b[:, None] * forces[:, j]) * u).sum(-1)  # (F, P)
    return xi, f, 2.0 / xi, [f"r({p}-{q})" for p, q in pairs]


def _ibp_sides(s: np.ndarray, kT: float):
    """Both sides of the identity from summed statistics ``s`` (6, P): ``(num, den)`` per coordinate, each (P,).

    ``num = kT (1 + <phi h>)`` and ``den = <phi f>`` with ``phi = xi - <xi>`` (weighted means).
    """
    n, sx, sf, sxf, sh, sxh = s
    c = sx / n
    num = kT * (1.0 + (sxh - c * sh) / n)
    den = (sxf - c * sf) / n
    return num, den


def _jackknife_scale(stats: np.ndarray, kT: float):
    """Scale per coordinate and combined, with delete-one-block jackknife errors.

    ``stats`` holds per-block sums (n_blocks, 6, P); returns ``(per, per_err, scale, scale_err)``, the
    combination weighting coordinates by inverse jackknife variance.
    """
    total = stats.sum(0)
    num, den = _ibp_sides(total, kT)
    nb = len(stats)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = num / den
        reps = [_ibp_sides(total - s, kT) for s in stats]
        per_reps = np.array([nm / dn for nm, dn in reps])  # (n_blocks, P)
        per_err = np.sqrt((nb - 1) / nb * ((per_reps - per_reps.mean(0)) ** 2).sum(0))
        weight = np.where(np.isfinite(per_err) & (per_err > 0), 1.0 / per_err**2, 0.0)
        if not weight.any():
            weight = np.ones_like(per)
        scale = float((weight * num).sum() / (weight * den).sum())
        comb = np.array([(weight * nm).sum() / (weight * dn).sum() for nm, dn in reps])
        scale_err = float(np.sqrt((nb - 1) / nb * ((comb - comb.mean()) ** 2).sum()))
    return per, per_err, scale, scale_err


def force_scale(ds, bonds=None, max_coordinates: int = 64, n_blocks: int = 20) -> ForceScaleResult:
    """The factor s that makes a data set's forces consistent with its positions at its temperature.

    For any test coordinate xi with a vector field v in configuration space
    that changes xi at unit rate (``v . grad xi = 1``), integration by parts
    over the Boltzmann density gives, for phi(xi) = xi - <xi>,

        E[phi(xi) v . grad U] = kT E[1 + phi(xi) div v].

    With v the mass-weighted stretch of a bond (atom i moves by ``a u``, atom
    j by ``-b u``, ``a + b = 1``, ``u`` the unit bond vector) ``div v = 2/r``;
    for a Cartesian coordinate of a single particle ``div v = 0``.  The stored
    forces ``F = -grad U`` give ``v . grad U``; s is the ratio of the two sides
    (one per coordinate, combined with inverse-variance weights).  Atoms held
    rigid by constraints are moved together (the field then does no work
    against constraint forces) and their forces are summed (Kraemer et al. 2023).

    This is the identity behind the histogram check :func:`pmf_consistency`
    (both sides of ``-kT d ln p/dxi = <dU/dxi>_xi`` tested against phi), but it
    needs no binning and no derivative of the histogram: on the built-in
    alanine dipeptide set (12,500 frames, 21 bonds) the combined s has a
    standard error of about 0.4 %.

    Parameters
    ----------
    ds : Dataset
        With forces.
    bonds : array, shape=(n_bonds, 2), int, optional
        Default: the topology's bonds, else bonds inferred from masses and
        distances (:func:`latentlab.data.bonds.infer_bonds`), else each atom's nearest neighbour.
    max_coordinates : int
        At most this many bonds (evenly chosen) are tested.
    n_blocks : int
        Contiguous blocks of frames for the jackknife error.

    Returns
    -------
    ForceScaleResult
        With ``scale`` NaN and no coordinates when nothing can be tested (no
        bonds and no neighbours that stay together, e.g. a liquid).

    References
    ----------
    den Otter, J. Chem. Phys. 112, 7283 (2000): free-energy derivatives from vector fields.
    Kraemer et al., J. Chem. Theory Comput. 19, 8 (2023): constraint-aware forces.
    """
    import time

    t0 = time.perf_counter()
    if ds.forces is None:
        fail("data", f"{ds.name or 'the data set'} has no forces", "use a data set with forces")
    if ds.n_frames < 5 * n_blocks:
        fail("data", f"has only {ds.n_frames} frames", f"the force check needs at least {5 * n_blocks} frames")
    bonds = np.asarray(_default_bonds(ds) if bonds is None else bonds, dtype=np.int64).reshape(-1, 2)
    group = _constraint_groups(ds, bonds)
    members = _group_members(group)
    n_rigid = int(sum(len(m) > 1 for m in members.values()))
    nothing_to_test = ForceScaleResult(scale=float("nan"), scale_err=float("nan"), coordinates=[],
                                       per_coordinate=np.zeros(0), per_coordinate_err=np.zeros(0),
                                       n_frames=ds.n_frames, kT=ds.kT, rigid_groups=n_rigid)
    if ds.n_atoms == 1:
        xi, f, h, names = _cartesian_coordinates(ds)
    else:
        pairs = _test_pairs(ds, group, bonds, max_coordinates)
        if not len(pairs):
            return nothing_to_test
        xi, f, h, names = _bond_coordinates(ds, pairs, members)
    if xi.shape[1] == 0:
        return nothing_to_test
    w = ds.frame_weights().astype(np.float64)[:, None]
    blocks = np.array_split(np.arange(ds.n_frames), n_blocks)
    # per-block sufficient statistics: sum w, w xi, w f, w xi f, w h, w xi h   -> (n_blocks, 6, P)
    stats = np.stack([np.stack([(w[b] * q).sum(0) for q in (np.ones_like(xi[b]), xi[b], f[b], xi[b] * f[b], h[b], xi[b] * h[b])])
                      for b in blocks])
    per, per_err, scale, scale_err = _jackknife_scale(stats, ds.kT)
    return ForceScaleResult(scale=scale, scale_err=scale_err, coordinates=names, per_coordinate=per,
                            per_coordinate_err=per_err, n_frames=ds.n_frames, kT=ds.kT, rigid_groups=n_rigid,
                            seconds=time.perf_counter() - t0)


def _unit_label(energy: str, length: str) -> str:
    return f"{energy}/{length}"


def judge_force_scale(result: ForceScaleResult, temperature: float, energy_unit: str = "kJ/mol",
                      length_unit: str = "nm") -> tuple[str, str, str]:
    """Verdict on a :class:`ForceScaleResult` for forces declared in ``energy_unit/length_unit``.

    Returns
    -------
    (verdict, problem, fix)
        ``verdict`` is ``"consistent"``, ``"inconclusive"``, ``"unit"`` (a unit mistake explains s),
        ``"sign"`` (gradients stored as forces), ``"temperature"`` or ``"inconsistent"``; ``problem``
        and ``fix`` are sentences for :func:`latentlab.validation.fail` ("" when consistent).
    """
    s, err = result.scale, result.scale_err
    log_err = result.log_err
    declared = _unit_label(energy_unit, length_unit)
    measured = f"s = {s:.3g} +- {err:.2g} from {len(result.coordinates)} coordinates over {result.n_frames} frames"
    if not result.coordinates:
        return ("inconclusive", "the force check found no coordinate to test (no bonded atoms, and no neighbours "
                "that stay together)", "import a topology with bonds, or pass --no-check")
    if not np.isfinite(s) or log_err > CONCLUSIVE_LOG_ERR:
        return "inconclusive", f"the force check is inconclusive ({measured})", "import more frames, or pass --no-check"
    if s < 0:
        return ("sign", f"the forces point uphill: they look like gradients dU/dx, not forces F = -dU/dx ({measured})",
                "negate the forces array (F = -grad U) and import again, or pass --no-check to import them as they are")
    ln = np.log(s)
    # within the statistical error plus the tolerance of CONSISTENT_LOG?
    if abs(ln) <= CONSISTENT_LOG + 3 * log_err:
        return "consistent", "", ""
    options = []
    for e_true, ef in _ENERGY_UNITS.items():
        for l_true, lf in _LENGTH_UNITS.items():
            factor = (ef / _ENERGY_UNITS[energy_unit]) * (_LENGTH_UNITS[length_unit] / lf)
            if (e_true, l_true) != (energy_unit, length_unit):
                options.append((abs(ln - np.log(factor)), factor, e_true, l_true))
    dist, factor, e_true, l_true = min(options)
    if dist <= FACTOR_LOG + 3 * log_err:
        size = f"{factor:.4g}x too small" if factor > 1 else f"{1 / factor:.4g}x too large"
        return ("unit", f"the forces look {size} for {declared}; they fit the positions if they were in "
                        f"{e_true}/{l_true} ({measured})",
                f"re-import with --force-unit {e_true}/{l_true} (or --energy-unit {e_true} --length-unit {l_true} "
                f"if the positions and energies share those units), or pass --no-check to import them as they are")
    t_conf = temperature / s
    if abs(ln) <= np.log(3.0):
        return ("temperature", f"the forces and positions are consistent with a temperature of about {t_conf:.0f} K, "
                               f"not the stated {temperature:g} K ({measured})",
                "check --temperature (or the forces: complete -grad U, including constraint forces), "
                "or pass --no-check to import them as they are")
    return ("inconsistent", f"the forces are inconsistent with the positions at {temperature:g} K by a factor "
                            f"{s:.3g} that no unit mistake explains ({measured})",
            "check that the forces are the complete F = -grad U of these frames (same order, same atoms), "
            "or pass --no-check to import them as they are")


def check_forces(ds, energy_unit: str = "kJ/mol", length_unit: str = "nm", argument: str = "forces",
                 bonds=None) -> ForceScaleResult | None:
    """Refuse forces inconsistent with the positions at the stated temperature (see :func:`force_scale`).

    Returns the result (None when the data set has no forces or too few
    frames to tell); raises ``ValueError`` naming the likely mistake and the fix.
    """
    if ds.forces is None or ds.n_frames < 100:
        return None
    result = force_scale(ds, bonds=bonds)
    verdict, problem, fix = judge_force_scale(result, ds.temperature, energy_unit, length_unit)
    result.verdict = verdict
    if verdict not in ("consistent", "inconclusive"):
        fail(argument, problem, fix)
    return result
