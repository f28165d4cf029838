"""Level-set consistency of a CG map's effective mass (docs/theory.md section 1; eq. 7 of Bruce et al.).

``A(q) = J M^-1 J^T`` is a function of ``Q = f(q)`` only if it is the same for
every q in the level set ``f(q) = Q``.  Two complementary measurements:

Binned spread (from data)
    Frames are binned by Q; in each bin with at least ``min_count`` frames
    ``s(bin) = mean_i ||A(q_i) - mean(A)||_F / ||mean(A)||_F``.  This reflects the
    fluctuations actually sampled, but mixes in the variation of A across the
    bin's width.
Level-set spread (bin-width free)
    From each of a set of frames, random moves *inside* the level set: a random
    displacement projected on the null space of J, then Newton steps
    ``q <- q - J^+ (f(q) - Q)`` back onto ``f(q) = Q``, ``n_moves`` times, plus a random rigid motion of the
    whole molecule when the map is invariant to it.  Moves are independent
    (not a chained walk), so they stay at a thermal-like distance from the
    sampled frame.  The spread is
    ``||A(q') - A(q)||_F / ||A(q)||_F``.  A consistent map gives round-off (~1e-12
    in float64).

Both are reported as median, 95th percentile and worst value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import vmap

from latentlab.maps.base import CGMap
from latentlab.maps.geometry import random_rotations
from latentlab.maps.mass import contract_mass, effective_mass, inverse_mass_read
from latentlab.validation import check_positions, check_positive, fail


@dataclass
class ConsistencyReport:
    """Result of :func:`check_consistency` (all spreads are relative Frobenius norms).

    Attributes
    ----------
    level_set : dict
        ``median``, ``p95``, ``max`` of the level-set spread, ``n_frames``, ``n_moves``, ``step_nm``.
    level_set_values : np.ndarray
        Every level-set spread value (one per frame and move).
    binned : dict
        ``median``, ``p95``, ``max`` over bins, ``n_bins_used``, ``bins`` (per dimension), ``min_count``.
    bin_edges : list of np.ndarray
        Edges along the first ``min(n_cg, 2)`` coordinates used for the map.
    bin_spread : np.ndarray
        ``s`` per bin over those coordinates (NaN where too few frames).
    score : float
        The headline number: the level-set 95th percentile.
    """

    map_spec: str | None
    names: list[str]
    level_set: dict
    binned: dict
    bin_edges: list = field(default_factory=list)
    bin_spread: np.ndarray | None = None
    level_set_values: np.ndarray | None = None

    @property
    def score(self) -> float:
        return float(self.level_set["p95"])

    def verdict(self, tolerance: float = 1e-6) -> str:
        return "consistent" if self.score <= tolerance else "inconsistent"

    def to_dict(self) -> dict:
        return {"map": self.map_spec, "coordinates": self.names, "score": self.score, "verdict": self.verdict(),
                "level_set": self.level_set, "binned": self.binned}


def _summary(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"median": None, "p95": None, "max": None}
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def _relative_spread(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(a - ref) / torch.linalg.matrix_norm(ref)


def level_set_moves(cg_map: CGMap, xs: torch.Tensor, n_moves: int = 8, step: float = 0.01, newton_steps: int = 30,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random moves inside the level sets of ``f``, each starting from the given read-atom positions.

    Parameters
    ----------
    xs : tensor, shape=(n_frames, n_read, 3), nm
    n_moves : int
        Number of independent moves per frame; each displacement has RMS ``step`` nm
        per atom coordinate before it is projected back onto the level set.
    step : float, nm

    Returns
    -------
    moved : tensor, shape=(n_moves, n_frames, n_read, 3)
        Positions after each move (projected back onto ``f = Q``).
    residual : tensor, shape=(n_moves, n_frames)
        ``max |f(moved) - Q|`` after projection.
    """
    gen = torch.Generator().manual_seed(seed)
    f_frames, n_read = xs.shape[:2]
    jac_fn = vmap(cg_map.flat_jacobian_fn())
    target = cg_map.evaluate(xs)
    x0 = xs.reshape(f_frames, -1).clone()
    jac0 = jac_fn(x0)  # (F, N, n)
    moved, residual = [], []
    for _ in range(n_moves):
        x, jac = x0, jac0
        xi = step * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        # Project on the null space of J: xi - J^T (J J^T)^-1 J xi.
        coef = torch.linalg.solve(jac @ jac.transpose(1, 2), (jac @ xi[..., None]))[..., 0]
        x = x + xi - (jac.transpose(1, 2) @ coef[..., None])[..., 0]
        for _ in range(newton_steps):
            err = cg_map.evaluate(x.reshape(f_frames, n_read, 3)) - target  # (F, N)
            periodic = torch.tensor(cg_map.periodic)
            if bool(periodic.any()):
                err = torch.where(periodic, torch.remainder(err + np.pi, 2 * np.pi) - np.pi, err)
            if float(err.abs().max()) < 1e2 * torch.finfo(x.dtype).eps:
                break
            jac = jac_fn(x)
            corr = torch.linalg.solve(jac @ jac.transpose(1, 2), err[..., None])
            x = x - (jac.transpose(1, 2) @ corr)[..., 0]
        moved.append(x.reshape(f_frames, n_read, 3).clone())
        residual.append(err.abs().amax(1))
    return torch.stack(moved), torch.stack(residual)


def check_consistency(cg_map: CGMap, positions, masses, n_bins: int = 20, min_count: int = 10,
                      n_level_set_frames: int = 200, n_moves: int = 8, step: float = 0.01,
                      rigid_motions: bool = True, seed: int = 0) -> ConsistencyReport:
    """Measure how far ``A(q)`` is from being a function of ``Q`` alone.

    Parameters
    ----------
    cg_map : CGMap
    positions : array, shape=(n_frames, n_atoms, 3), nm
        Frames (e.g. a trajectory) at which to test; computed in float64.
    masses : array, shape=(n_atoms,), amu
    n_bins : int
        Bins per coordinate for the binned spread (over at most 3 coordinates;
        more coordinates are binned on the first 3).
    min_count : int
        Bins with fewer frames are skipped.
    n_level_set_frames : int
        Frames (evenly spaced) from which the level-set walk starts.
    n_moves, step : int, float (nm)
        Length of the level-set walk and RMS size of each move.
    rigid_motions : bool
        Also apply a random rotation + translation to each moved frame when
        the map is invariant to it (checked numerically), which explores the
        level set along its rigid-motion orbit.
    """
    x = check_positions(positions, "positions", n_atoms=cg_map.n_atoms, dtype=torch.float64)
    check_positive(step, "step", "nm")
    if callable(masses):
        fail("masses", "position-dependent masses are not supported by the consistency check", "pass (n_atoms,) masses")
    minv = inverse_mass_read(cg_map, x, masses)  # (R,)
    a = effective_mass(cg_map, x, masses).detach()  # (F, N, N); raises on rank deficiency
    with torch.no_grad():
        Q = cg_map(x)

    # --- binned spread over Q
    dims = min(cg_map.n_cg, 3)
    qn = Q[:, :dims].numpy()
    edges = [np.linspace(qn[:, d].min(), qn[:, d].max() + 1e-12, n_bins + 1) for d in range(dims)]
    idx = np.stack([np.clip(np.digitize(qn[:, d], edges[d]) - 1, 0, n_bins - 1) for d in range(dims)], 1)
    flat = np.ravel_multi_index(tuple(idx.T), (n_bins,) * dims)
    spread = np.full(n_bins**dims, np.nan)
    an = a.numpy()
    for b in np.unique(flat):
        members = an[flat == b]
        if len(members) < min_count:
            continue
        mean = members.mean(0)
        spread[b] = np.mean(np.linalg.norm(members - mean, axis=(1, 2))) / np.linalg.norm(mean)
    spread = spread.reshape((n_bins,) * dims)
    binned = _summary(spread.ravel())
    binned.update({"n_bins_used": int(np.isfinite(spread).sum()), "bins": n_bins, "min_count": min_count})
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-empty slices give NaN, as intended
        shown = np.nanmean(spread, axis=tuple(range(2, dims))) if dims > 2 else spread

    # --- level-set walk
    pick = np.unique(np.linspace(0, x.shape[0] - 1, min(n_level_set_frames, x.shape[0])).astype(int))
    xs = cg_map.select(x[pick])
    with torch.no_grad():
        moved, residual = level_set_moves(cg_map, xs, n_moves=n_moves, step=step, seed=seed)
    n_moves_done, n_f = moved.shape[:2]
    flat_moved = moved.reshape(n_moves_done * n_f, -1, 3)
    if rigid_motions:
        gen = torch.Generator().manual_seed(seed + 1)
        rot = random_rotations(flat_moved.shape[0], gen, flat_moved.dtype)
        shift = torch.randn(flat_moved.shape[0], 1, 3, generator=gen, dtype=flat_moved.dtype)
        rotated = flat_moved @ rot.transpose(1, 2) + shift
        with torch.no_grad():
            invariant = torch.allclose(cg_map.evaluate(rotated), cg_map.evaluate(flat_moved), atol=1e-9, rtol=1e-9)
        if invariant:
            flat_moved = rotated
    jr = cg_map.jacobian_read(flat_moved)
    a_moved = contract_mass(jr, minv).reshape(n_moves_done, n_f, cg_map.n_cg, cg_map.n_cg)
    a_start = contract_mass(cg_map.jacobian_read(xs), minv)
    ls = _relative_spread(a_moved, a_start[None]).detach().numpy().ravel()
    ls = ls[residual.numpy().ravel() < 1e-8]
    level = _summary(ls)
    level.update({"n_frames": int(n_f), "n_moves": int(n_moves_done), "step_nm": step,
                  "projection_failures": int((residual >= 1e-8).sum())})
    return ConsistencyReport(cg_map.spec, cg_map.names, level, binned, edges[:2], shown, ls)


def closed_form_check(cg_map: CGMap, positions, masses, n_frames: int = 200) -> dict:
    """The map's closed-form A(Q) against the autograd ``J M^-1 J^T`` on up to ``n_frames`` frames.

    Returns ``{"available": False}`` for maps without a closed form, else ``{"available": True,
    "max_relative_difference": float, "frames": int}`` (relative Frobenius norm; round-off for a correct formula).
    """
    x = check_positions(positions, "positions", n_atoms=cg_map.n_atoms, dtype=torch.float64)[:n_frames]
    with torch.no_grad():
        Q = cg_map(x)
    minv = 1.0 / torch.as_tensor(np.asarray(masses), dtype=torch.float64)[list(cg_map.atoms)]
    closed = cg_map.closed_form_effective_mass(Q, minv)
    if closed is None:
        return {"available": False}
    numeric = effective_mass(cg_map, x, masses).detach()
    rel = torch.linalg.matrix_norm(closed - numeric) / torch.linalg.matrix_norm(numeric)
    return {"available": True, "max_relative_difference": float(rel.max()), "frames": int(len(rel))}
