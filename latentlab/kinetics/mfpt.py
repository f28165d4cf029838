"""Mean first-passage times between named basins, counted directly on the trajectories.

Core-to-core (milestoning) counting for a pair of basins A, B: every frame carries
the basin among {A, B} that the trajectory visited last (frames before the first
visit carry none).  A passage A -> B starts on the first frame in A after the last
visit to B and ends on the first frame in B; its duration is the time spent
"coming from A".  The estimator is

    MFPT(A -> B) = T_A / N_AB

with ``T_A`` the total time whose last-visited basin is A and ``N_AB`` the number of
A -> B transitions.  With complete passages only it is their mean; the time of
passages cut by the start or end of a trajectory is included, which makes it the
maximum-likelihood rate estimate ``1 / k_AB`` for memoryless (exponential) waiting
(the usual censoring argument) and uses every frame of many short walkers.
Nothing is counted across two trajectories.

Standard error: block bootstrap.  Each trajectory is cut into blocks (at least
``min_blocks`` in all; with many walkers each walker is one block), ``T_A`` and
``N_AB`` are summed per block (the "last visited" state runs on across block edges
of one trajectory, so no passage is lost), and the ratio is recomputed on blocks
resampled with replacement.  Resampling blocks keeps the correlation inside a block
(bursts of recrossings); resampling single passages would not.

The counting depends on the frame spacing: passages shorter than one frame, and
recrossings between adjacent basins inside one frame, are not seen.  Compare two
data sets only at the same frame spacing (:func:`latentlab.kinetics.compare`
strides the finer one).

References
----------
Efron & Tibshirani, "An introduction to the bootstrap" (1993), ch. 8 (block bootstrap).
Buchete & Hummer, "Coarse master equations for peptide folding dynamics",
J. Phys. Chem. B 112, 6057 (2008) (core-set / transition-based assignment).
"""

from __future__ import annotations

import math

import numpy as np

from latentlab.validation import fail


def history(in_a: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    """Last basin visited among {A, B} for every frame: 1 = A, 2 = B, 0 = none yet.

    A frame in both counts as B.

    Parameters
    ----------
    in_a, in_b : np.ndarray, shape=(n_frames,) or (n_trajectories, n_frames), bool
        Time runs along the last axis; rows are separate trajectories.
    """
    in_a, in_b = np.asarray(in_a, bool), np.asarray(in_b, bool)
    lab = np.where(in_b, 2, np.where(in_a, 1, 0)).astype(np.int8)
    if lab.shape[-1] == 0:
        return lab
    idx = np.where(lab > 0, np.arange(lab.shape[-1]), -1)
    idx = np.maximum.accumulate(idx, axis=-1)
    last = np.take_along_axis(lab, np.maximum(idx, 0), axis=-1)
    return np.where(idx >= 0, last, 0).astype(np.int8)


def passage_counts(in_a: np.ndarray, in_b: np.ndarray, n_blocks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per block of each trajectory: frame intervals spent coming from A, and A -> B transitions.

    Parameters
    ----------
    in_a, in_b : np.ndarray, shape=(n_frames,) or (n_trajectories, n_frames), bool
        Rows (trajectories of one length) are never joined.
    n_blocks : int
        Blocks per trajectory (at most one per frame interval).

    Returns
    -------
    time_a : np.ndarray, shape=(n_trajectories * n_blocks,), int
        Intervals ``i -> i+1`` whose frame ``i`` has last visited A.
    n_ab : np.ndarray, shape=(n_trajectories * n_blocks,), int
    """
    h = history(in_a, in_b)
    h = h[None, :] if h.ndim == 1 else h
    n_int = h.shape[1] - 1
    if n_int <= 0:
        return np.zeros(h.shape[0] * n_blocks, dtype=np.int64), np.zeros(h.shape[0] * n_blocks, dtype=np.int64)
    from_a = h[:, :-1] == 1  # (n_traj, n_int)
    trans = from_a & (h[:, 1:] == 2)
    n_blocks = int(max(1, min(n_blocks, n_int)))
    edges = np.linspace(0, n_int, n_blocks + 1).astype(int)[:-1]
    return (np.add.reduceat(from_a.astype(np.int64), edges, axis=1).ravel(),
            np.add.reduceat(trans.astype(np.int64), edges, axis=1).ravel())


def mfpt_direct(masks: dict, dt_ps: float, pairs=None, *, min_blocks: int = 20, n_bootstrap: int = 1000,
                seed: int = 0) -> dict:
    """Direct MFPTs between basins with block-bootstrap standard errors.

    Parameters
    ----------
    masks : dict
        ``{basin: [bool array (n_frames_i,) per trajectory]}`` (:meth:`BasinSet.masks`).
    dt_ps : float
        Frame spacing, ps.
    pairs : list of (str, str), optional
        Ordered pairs (default: all ordered pairs of different basins).
    min_blocks : int
        Blocks in all (trajectories are cut into ``ceil(min_blocks / n_trajectories)`` blocks each).
    n_bootstrap : int
        Bootstrap resamples.
    seed : int

    Returns
    -------
    dict
        ``{"A->B": {"mfpt_ps", "stderr_ps", "transitions", "time_from_a_ps", "n_blocks"}}``;
        ``mfpt_ps`` is None without any transition, ``stderr_ps`` None when a resample has none
        (too few transitions for an error bar).
    """
    names = list(masks)
    if pairs is None:
        pairs = [(a, b) for a in names for b in names if a != b]
    n_traj = len(next(iter(masks.values()))) if masks else 0
    if n_traj == 0:
        fail("masks", "holds no trajectories", "pass basin masks from BasinSet.masks(trajectories)")
    per_traj = int(math.ceil(max(1, min_blocks) / n_traj))
    # Trajectories of one length are stacked (rows stay separate): one vectorised pass per length.
    lengths = np.array([len(m) for m in masks[names[0]]])
    groups = [np.nonzero(lengths == n)[0] for n in np.unique(lengths)]
    stacked = {b: [np.stack([masks[b][k] for k in g]) for g in groups] for b in names}
    rng = np.random.default_rng(seed)
    out = {}
    weights = None
    for a, b in pairs:
        ta, nab = [], []
        for j in range(len(groups)):
            t, n = passage_counts(stacked[a][j], stacked[b][j], per_traj)
            ta.append(t)
            nab.append(n)
        ta = np.concatenate(ta).astype(np.float64)
        nab = np.concatenate(nab).astype(np.float64)
        n_trans = int(nab.sum())
        total = float(ta.sum()) * dt_ps
        mfpt = total / n_trans if n_trans > 0 else None
        stderr = None
        if n_trans > 0 and n_bootstrap > 1 and ta.size > 1:
            if weights is None or weights.shape[1] != ta.size:
                weights = rng.multinomial(ta.size, np.full(ta.size, 1.0 / ta.size), size=int(n_bootstrap)).astype(np.float64)
            nb = weights @ nab
            if np.all(nb > 0):
                stderr = float(np.std((weights @ ta) * dt_ps / nb, ddof=1))
        out[f"{a}->{b}"] = {"mfpt_ps": mfpt, "stderr_ps": stderr, "transitions": n_trans, "time_from_a_ps": total,
                            "n_blocks": int(ta.size)}
    return out


def basin_visits(masks: dict, dt_ps: float) -> dict:
    """Visits (runs of consecutive frames inside a basin) per basin, to judge the frame spacing.

    Returns
    -------
    dict
        ``{basin: {"visits", "mean_dwell_ps", "single_frame_fraction"}}``; a run cut by the
        start or end of a trajectory counts as a visit.  When most visits last a single frame,
        the spacing is too coarse to resolve the dwell times.
    """
    out = {}
    for name, per_traj in masks.items():
        lengths = []
        for m in per_traj:
            edges = np.diff(np.concatenate([[0], np.asarray(m, np.int8), [0]]))
            lengths.append(np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0])
        runs = np.concatenate(lengths) if lengths else np.zeros(0, int)
        out[name] = {"visits": int(runs.size),
                     "mean_dwell_ps": float(runs.mean() * dt_ps) if runs.size else None,
                     "single_frame_fraction": float(np.mean(runs == 1)) if runs.size else None}
    return out
