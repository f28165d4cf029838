"""One call for the kinetics of a trajectory in Q, and model vs reference side by side."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from latentlab.kinetics.acf import acf_analysis
from latentlab.kinetics.basins import BasinSet, resolve_basins
from latentlab.kinetics.mfpt import basin_visits, mfpt_direct
from latentlab.kinetics.trajectories import Trajectories
from latentlab.validation import fail

#: Relative tolerance when a lag must be a whole number of frames.
_FRAME_TOLERANCE = 1e-6

#: Below this many (effective) transition counts per MSM state at the lag, a warning says the MSM is noise.
MIN_COUNTS_PER_STATE = 20.0

MFPT_METHOD = ("direct: core-to-core (last basin visited) counting on the trajectories, MFPT = time coming from A / "
               "number of A->B transitions; standard error by block bootstrap over trajectory blocks")


@dataclass
class KineticsResult:
    """Everything :func:`analyze` measured on one set of trajectories (``to_dict()`` for JSON).

    Attributes
    ----------
    trajectories : Trajectories
        What was analysed (after any striding).
    acf : dict
        :func:`latentlab.kinetics.acf.acf_analysis` output.
    lag_ps : float or None
        Lag of the reported MSM.
    its_lags_ps : np.ndarray, shape=(n_lags,)
    its_ps : np.ndarray, shape=(n_lags, n_timescales)
        Maximum-likelihood implied timescales at each lag (slowest first).
    its_interval_ps : np.ndarray, shape=(n_lags, n_timescales, 2)
        Bayesian 95 % intervals.
    its_converged : bool or None
        Whether the slowest timescale levelled off with lag (None without MSM).
    ck : dict or None
        Chapman-Kolmogorov test (:func:`latentlab.kinetics.msm.ck_test`).
    basins : BasinSet or None
    basin_populations : dict
    mfpt : dict
        Direct MFPTs (:func:`latentlab.kinetics.mfpt.mfpt_direct`).
    mfpt_msm : dict
        MSM MFPTs (:func:`latentlab.kinetics.msm.msm_mfpt`).
    basin_visits : dict
        Visits per basin, mean dwell and share of single-frame visits (:func:`latentlab.kinetics.mfpt.basin_visits`).
    process_basins : list of dict
        Per implied timescale, the correlation of its eigenvector with each basin
        (:func:`latentlab.kinetics.msm.process_basins`): which exchange the process is.
    discretizer : Discretizer or None
        Reuse it (``analyze(..., discretizer=result.discretizer)``) to put another trajectory on the same states.
    fits : dict
        ``{lag in frames: MSMFit}`` (deeptime models; not in ``to_dict``).
    msm_info : dict
    warnings : list of str
    seconds : dict
    """

    trajectories: Trajectories
    acf: dict
    lag_ps: float | None = None
    its_lags_ps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    its_ps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    its_interval_ps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    its_converged: bool | None = None
    ck: dict | None = None
    basins: BasinSet | None = None
    basin_populations: dict = field(default_factory=dict)
    mfpt: dict = field(default_factory=dict)
    mfpt_msm: dict = field(default_factory=dict)
    basin_visits: dict = field(default_factory=dict)
    process_basins: list = field(default_factory=list)
    discretizer: object = None
    fits: dict = field(default_factory=dict)
    msm_info: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ the numbers at the chosen lag
    def _at_lag(self) -> int | None:
        if self.lag_ps is None or self.its_lags_ps.size == 0:
            return None
        i = int(np.argmin(np.abs(self.its_lags_ps - self.lag_ps)))
        return i if abs(self.its_lags_ps[i] - self.lag_ps) <= 1e-9 * max(1.0, self.lag_ps) else None

    @property
    def implied_timescales_ps(self) -> np.ndarray:
        """Slowest first, at ``lag_ps``, shape=(n_timescales,)."""
        i = self._at_lag()
        return self.its_ps[i] if i is not None else np.zeros(0)

    @property
    def implied_timescales_interval_ps(self) -> np.ndarray:
        """95 % [low, high] per timescale, shape=(n_timescales, 2)."""
        i = self._at_lag()
        return self.its_interval_ps[i] if i is not None else np.zeros((0, 2))

    @property
    def tau_int_ps(self) -> dict:
        return dict(self.acf["tau_int_ps"])

    def to_dict(self, acf: bool = True) -> dict:
        """JSON-ready summary; NaN and infinity become None.

        Keys of issue 12 (a contract): ``lag_ps``, ``implied_timescales_ps`` (slowest first),
        ``implied_timescales_interval_ps``, ``tau_int_ps``, ``mfpt_ps``, ``mfpt_stderr_ps``.
        """
        tr = self.trajectories
        its = self.implied_timescales_ps
        interval = self.implied_timescales_interval_ps
        # Resolved: longer than the lag (the lower end of the interval when there is one).
        resolved = [bool((lo if np.isfinite(lo) else t) > self.lag_ps) for t, (lo, _) in zip(its, interval)]
        out = {
            "source": tr.source, "dataset": tr.dataset, "map": tr.map_spec,
            "coordinates": list(tr.names), "periodic": list(tr.periodic), "units": list(tr.units),
            "dt_ps": tr.dt_ps, "n_frames": tr.n_frames, "n_trajectories": tr.n_trajectories,
            "total_time_ps": tr.total_time_ps,
            "lag_ps": self.lag_ps,
            "implied_timescales_ps": its.tolist(),
            "implied_timescales_interval_ps": interval.tolist(),
            "implied_timescales_resolved": resolved,
            "implied_timescales_basins": list(self.process_basins),
            "tau_int_ps": dict(self.acf["tau_int_ps"]),
            "tau_int_stderr_ps": dict(self.acf["tau_int_stderr_ps"]),
            "tau_int_window_ps": dict(self.acf["tau_int_window_ps"]),
            "tau_int_window_reached": dict(self.acf["tau_int_window_reached"]),
            "tau_int_floor_ps": self.acf["tau_int_floor_ps"],
            "mfpt_ps": {k: v["mfpt_ps"] for k, v in self.mfpt.items()},
            "mfpt_stderr_ps": {k: v["stderr_ps"] for k, v in self.mfpt.items()},
            "mfpt_transitions": {k: v["transitions"] for k, v in self.mfpt.items()},
            "mfpt_method": MFPT_METHOD if self.mfpt else None,
            "mfpt_msm_ps": {k: v["mfpt_ps"] for k, v in self.mfpt_msm.items()},
            "mfpt_msm_interval_ps": {k: v["interval_ps"] for k, v in self.mfpt_msm.items()},
            "basin_set": None if self.basins is None else self.basins.label,
            "basins": None if self.basins is None else self.basins.describe(),
            "basin_populations": dict(self.basin_populations),
            "basin_visits": dict(self.basin_visits),
            "its": {"lags_ps": self.its_lags_ps.tolist(), "timescales_ps": self.its_ps.tolist(),
                    "intervals_ps": self.its_interval_ps.tolist(), "converged": self.its_converged},
            "ck_test": self.ck,
            "msm": dict(self.msm_info),
            "warnings": list(self.warnings),
            "seconds": dict(self.seconds),
        }
        if acf:
            out["acf"] = {"lags_ps": np.asarray(self.acf["lags_ps"]).tolist(),
                          **{k: np.asarray(v).tolist() for k, v in self.acf["acf"].items()}}
        return _jsonable(out)


@dataclass
class KineticsComparison:
    """Model and reference analysed the same way (same frame spacing, states, lag and basins)."""

    model: KineticsResult
    reference: KineticsResult
    analysis_dt_ps: float
    warnings: list = field(default_factory=list)

    def ratios(self) -> dict:
        """model / reference for tau_int, the implied timescales at the lag, and the MFPTs."""
        m, r = self.model, self.reference
        out = {"tau_int": {k: _ratio(m.tau_int_ps.get(k), v) for k, v in r.tau_int_ps.items()}}
        n = min(m.implied_timescales_ps.size, r.implied_timescales_ps.size)
        out["implied_timescales"] = [_ratio(m.implied_timescales_ps[i], r.implied_timescales_ps[i]) for i in range(n)]
        out["mfpt"] = {k: _ratio(m.mfpt.get(k, {}).get("mfpt_ps"), v["mfpt_ps"]) for k, v in r.mfpt.items()}
        return out

    def to_dict(self, acf: bool = True) -> dict:
        return _jsonable({"model": self.model.to_dict(acf), "reference": self.reference.to_dict(acf),
                          "analysis_dt_ps": self.analysis_dt_ps, "ratio_model_to_reference": self.ratios(),
                          "warnings": list(self.warnings)})


# ---------------------------------------------------------------------- analysis
def _first_passages(result: KineticsResult, bset: BasinSet, *, min_blocks: int, n_bootstrap: int, seed: int) -> dict:
    """Basin populations, direct MFPTs and visit statistics into ``result``; return the basin masks.

    The masks map each basin name to one boolean array per trajectory, shape=(n_frames_i,).
    """
    tr, dt, warnings = result.trajectories, result.trajectories.dt_ps, result.warnings
    masks = bset.masks(tr)
    n = tr.n_frames
    result.basin_populations = {b: float(sum(int(m.sum()) for m in ms)) / n for b, ms in masks.items()}
    result.basins = bset
    overlap = _overlaps(masks)
    if overlap:
        warnings.append("basins overlap (" + ", ".join(overlap) + "); a first passage ends in the target basin")
    for b, p in result.basin_populations.items():
        if p == 0:
            warnings.append(f"basin {b} is never visited")
    result.mfpt = mfpt_direct(masks, dt, min_blocks=min_blocks, n_bootstrap=n_bootstrap, seed=seed)
    result.basin_visits = basin_visits(masks, dt)
    for b, v in result.basin_visits.items():
        if v["visits"] >= 10 and v["single_frame_fraction"] > 0.3:
            warnings.append(f"{v['single_frame_fraction']:.0%} of the {v['visits']} visits to {b} last a single "
                            f"frame ({dt:g} ps): this frame spacing does not resolve its dwell times (too coarse, "
                            "or the basin is no metastable state)")
    return masks


def _lag_ladder(tr: Trajectories, acf: dict, lags_ps, lag_k: int | None) -> list[int]:
    """Lags of the implied-timescale scan, frames: ``lags_ps`` or a geometric ladder up to 4 Sokal windows.

    ``lag_k`` (the requested MSM lag, frames) is added; lags as long as the longest trajectory are dropped.
    """
    dt = tr.dt_ps
    longest = int(tr.lengths.max())
    if lags_ps is None:
        window = max(acf["tau_int_window_ps"].values()) / dt
        top = int(max(2, min(max(8, math.ceil(4 * window)), longest // 4)))
        ladder = sorted({int(v) for v in np.round(np.geomspace(1, top, 8))})
    else:
        ladder = sorted({lag_frames(v, dt, "lags_ps") for v in np.atleast_1d(lags_ps)})
    if lag_k is not None:
        ladder = sorted(set(ladder) | {lag_k})
    ladder = [k for k in ladder if k < longest]
    if not ladder:
        fail("lags_ps", f"every lag is as long as the longest trajectory ({longest} frames)", "use shorter lags")
    return ladder


class _LazyFits:
    """MSM fits by lag (frames), each made once on first use; ``fits`` holds those made."""

    def __init__(self, msm_mod, dtrajs, n_states: int, n_samples: int, seed: int, count_mode: str):
        self.msm_mod, self.dtrajs, self.n_states = msm_mod, dtrajs, n_states
        self.n_samples, self.seed, self.count_mode = n_samples, seed, count_mode
        self.fits = {}

    def __call__(self, k: int):
        if k not in self.fits:
            self.fits[k] = self.msm_mod.fit_msm(self.dtrajs, k, self.n_states, n_samples=self.n_samples,
                                                seed=self.seed + k, count_mode=self.count_mode)
        return self.fits[k]


def _implied_timescales(result: KineticsResult, get_fit: _LazyFits, ladder: list, n_timescales: int) -> None:
    """Implied timescales (ps) and their intervals at every lag of ``ladder`` into ``result``.

    ``its_ps`` has shape (n_lags, n_timescales), ``its_interval_ps`` (n_lags, n_timescales, 2).
    """
    dt = result.trajectories.dt_ps
    its = np.full((len(ladder), n_timescales), np.nan)
    its_iv = np.full((len(ladder), n_timescales, 2), np.nan)
    for i, k in enumerate(ladder):
        its[i], its_iv[i], _ = get_fit.msm_mod.timescales(get_fit(k), n_timescales, dt)
    result.its_lags_ps = np.asarray(ladder, dtype=float) * dt
    result.its_ps = its
    result.its_interval_ps = its_iv


def _choose_lag(result: KineticsResult, ladder: list, lag_k: int | None) -> int:
    """The MSM lag, frames: ``lag_k`` if given, else the first where the slowest timescale levels off (< 10 %).

    Sets ``its_converged`` and ``lag_ps`` of ``result`` and warns when the lag does not resolve the slowest.
    """
    dt, its, warnings = result.trajectories.dt_ps, result.its_ps, result.warnings
    converged_at = None
    for i in range(len(ladder) - 1):
        a, b = its[i, 0], its[i + 1, 0]
        if np.isfinite(a) and np.isfinite(b) and a > ladder[i] * dt and abs(b - a) < 0.1 * a:
            converged_at = i
            break
    result.its_converged = converged_at is not None
    if lag_k is None:
        if converged_at is not None:
            lag_k = ladder[converged_at]
        else:
            ok = [i for i in range(len(ladder)) if np.isfinite(its[i, 0]) and its[i, 0] > ladder[i] * dt]
            lag_k = ladder[ok[0]] if ok else ladder[0]
            warnings.append("implied timescales do not level off with lag time (no lag where the slowest changes by "
                            "< 10 % to the next); the reported lag is the shortest that resolves it, or the shortest")
    result.lag_ps = lag_k * dt
    slow = result.implied_timescales_ps
    if slow.size and np.isfinite(slow[0]) and slow[0] <= result.lag_ps:
        warnings.append(f"the slowest implied timescale ({slow[0]:.3g} ps) is not longer than the lag "
                        f"({result.lag_ps:g} ps): this MSM does not resolve it at this frame spacing")
    return lag_k


def _msm_info(test, disc, count_mode: str, n_samples: int, warnings: list) -> dict:
    """Summary of the MSM at the lag (counts per state, active states, embedding); warns when counts are few."""
    per_state = 0.0 if test.prior is None else float(test.prior.count_model.count_matrix.sum()) / test.prior.n_states
    if per_state < MIN_COUNTS_PER_STATE:
        warnings.append(f"only {per_state:.3g} transition counts per MSM state at the lag: implied timescales and MSM "
                        "MFPTs are dominated by noise (use fewer --clusters or more data)")
    return {"counts_per_state": per_state, "n_states": disc.n_states,
            "states_active": 0 if test.prior is None else int(test.prior.n_states),
            "active_count_fraction": test.active_fraction, "count_mode": count_mode,
            "n_samples": int(n_samples), "posterior_seeded": test.seeded, "embedding":
            ["cos/sin" if p else "standardised" for p in disc.periodic], "clustering": "k-means++"}


def _msm_basin_kinetics(result: KineticsResult, get_fit: _LazyFits, lag_k: int, masks, bset, *, ck_sets: int,
                        ck_multiples: int, n_samples: int, n_timescales: int) -> None:
    """Chapman-Kolmogorov test, MSM first passages and the basins each slow process exchanges, into ``result``."""
    msm_mod, dt, seconds = get_fit.msm_mod, result.trajectories.dt_ps, result.seconds
    longest = int(result.trajectories.lengths.max())
    t0 = time.perf_counter()
    fractions = None
    if masks is not None:
        fractions = msm_mod.basin_state_fractions(get_fit.dtrajs, masks, get_fit.n_states)
    if ck_sets and n_samples > 0:
        multiples = [lag_k * m for m in range(1, int(ck_multiples) + 1) if lag_k * m < longest]
        if len(multiples) >= 2:
            result.ck = msm_mod.ck_test([get_fit(k) for k in multiples], int(ck_sets), dt, fractions,
                                        None if bset is None else bset.names)
    seconds["ck_test"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if bset is not None:
        test = get_fit(lag_k)
        result.mfpt_msm = msm_mod.msm_mfpt(test, fractions, bset.names, dt)
        result.process_basins = msm_mod.process_basins(test, fractions, bset.names, n_timescales)
    seconds["mfpt_msm"] = time.perf_counter() - t0


def analyze(trajectories, dt_ps: float | None = None, *, names=None, periodic=None, basins="auto",
            lag_ps: float | None = None, lags_ps=None, n_clusters: int = 50, n_timescales: int = 5,
            n_samples: int = 100, ck_sets: int = 2, ck_multiples: int = 4, msm: bool = True, discretizer=None,
            count_mode: str = "auto", n_bootstrap: int = 1000, min_blocks: int = 20, seed: int = 0) -> KineticsResult:
    """Kinetics of independent trajectories in Q: ACFs, tau_int, MSM timescales, CK test, MFPTs.

    Parameters
    ----------
    trajectories : Trajectories, or list of arrays each shape=(n_frames_i, n_cg)
        Independent trajectories (never joined).  Arrays need ``dt_ps`` (and ``names`` /
        ``periodic``); a 3-D array ``(n_records, n_walkers, n_cg)`` is read as walkers.
    dt_ps : float, optional
        Frame spacing, ps (arrays only).
    names, periodic : sequences, optional
        Coordinate names and periodicity (arrays only).
    basins : str, BasinSet or None
        ``"auto"`` (built-in set when one fits the coordinates), a built-in name, a spec
        (:mod:`latentlab.kinetics.basins`), or None / ``"none"``.
    lag_ps : float, optional
        MSM lag, ps, a whole number of frames.  Default: the shortest lag of the ladder from
        which the slowest implied timescale changes by < 10 % to the next lag and exceeds the
        lag; else the shortest lag at which it exceeds the lag; else the shortest lag.
    lags_ps : sequence of float, optional
        Lags of the implied-timescale scan, ps (default: up to 8 lags from one frame to
        4 Sokal windows of the slowest coordinate, at most a quarter of the longest trajectory).
    n_clusters : int
        k-means states (ignored with ``discretizer``).
    n_timescales : int
    n_samples : int
        Bayesian posterior samples per lag (0: maximum likelihood only, no intervals).
    ck_sets : int
        PCCA+ sets of the Chapman-Kolmogorov test (0: no test).
    ck_multiples : int
        The CK test compares lags tau, 2 tau, ..., ``ck_multiples`` tau.
    msm : bool
        False: ACF/tau_int and direct MFPTs only (the fast path).
    discretizer : Discretizer, optional
        States of another analysis (e.g. the reference's), for a like-for-like MSM.
    count_mode : {"auto", "effective", "sliding-effective"}
        deeptime's transition counting; auto: effective for <= 16 trajectories
        (:func:`latentlab.kinetics.msm.choose_count_mode`).
    n_bootstrap, min_blocks : int
        Block bootstrap of the direct MFPTs.
    seed : int
        k-means, posterior sampling and bootstrap.

    Returns
    -------
    KineticsResult
    """
    from latentlab.kinetics import msm as msm_mod

    t_start = time.perf_counter()
    tr = trajectories if isinstance(trajectories, Trajectories) else Trajectories.from_arrays(
        trajectories, dt_ps, names=names, periodic=periodic)
    dt = tr.dt_ps
    warnings = list(tr.warnings)
    seconds = {}
    t0 = time.perf_counter()
    acf = acf_analysis(tr)
    seconds["acf"] = time.perf_counter() - t0
    for k, ok in acf["tau_int_window_reached"].items():
        if not ok:
            warnings.append(f"tau_int of {k}: the trajectories end before Sokal's window; the value is a lower bound")
    result = KineticsResult(trajectories=tr, acf=acf, warnings=warnings, seconds=seconds)

    t0 = time.perf_counter()
    bset = resolve_basins(basins, tr)
    masks = None if bset is None else _first_passages(result, bset, min_blocks=min_blocks, n_bootstrap=n_bootstrap,
                                                      seed=seed)
    seconds["mfpt"] = time.perf_counter() - t0
    lag_k = None if lag_ps is None else lag_frames(lag_ps, dt, "lag_ps")
    if not msm:
        result.lag_ps = None if lag_ps is None else lag_k * dt
        seconds["total"] = time.perf_counter() - t_start
        return result

    t0 = time.perf_counter()
    disc = discretizer if discretizer is not None else msm_mod.Discretizer.fit(tr, n_clusters=n_clusters, seed=seed)
    dtrajs = disc.transform(tr)
    result.discretizer = disc
    seconds["clustering"] = time.perf_counter() - t0
    ladder = _lag_ladder(tr, acf, lags_ps, lag_k)
    t0 = time.perf_counter()
    mode = msm_mod.choose_count_mode(tr.n_trajectories) if count_mode == "auto" else count_mode
    get_fit = _LazyFits(msm_mod, dtrajs, disc.n_states, n_samples, seed, mode)
    _implied_timescales(result, get_fit, ladder, n_timescales)
    seconds["msm"] = time.perf_counter() - t0
    lag_k = _choose_lag(result, ladder, lag_k)
    result.msm_info = _msm_info(get_fit(lag_k), disc, mode, n_samples, warnings)
    _msm_basin_kinetics(result, get_fit, lag_k, masks, bset, ck_sets=ck_sets, ck_multiples=ck_multiples,
                        n_samples=n_samples, n_timescales=n_timescales)
    result.fits = get_fit.fits
    seconds["total"] = time.perf_counter() - t_start
    return result


def compare(model, reference, *, basins="auto", lag_ps: float | None = None, match_spacing: bool = True,
            **kwargs) -> KineticsComparison:
    """Analyse a model and a reference the same way and put them side by side.

    The finer of the two is strided to the coarser frame spacing (first passages and
    tau_int depend on it), the reference is analysed first, and the model then uses the
    reference's states, lag ladder, lag and basins.

    Parameters
    ----------
    model, reference : Trajectories
    basins : str, BasinSet or None
        As in :func:`analyze` (resolved on the reference first).
    lag_ps : float, optional
        MSM lag for both (default: the reference's choice).
    match_spacing : bool
        Stride the finer data to the coarser spacing.
    **kwargs
        Passed to :func:`analyze` (``n_clusters``, ``n_samples``, ``seed``, ...).
    """
    if tuple(model.names) != tuple(reference.names) or tuple(model.periodic) != tuple(reference.periodic):
        fail("reference", f"has coordinates {list(reference.names)} but the model has {list(model.names)}",
             "compare with the data set (and map) the model was trained on")
    notes = []
    if match_spacing:
        model, reference, note = _common_spacing(model, reference)
        if note:
            notes.append(note)
    bset = resolve_basins(basins, reference)
    if bset is None and isinstance(basins, str) and basins.strip().lower() == "auto":
        bset = resolve_basins("auto", model)
    ref = analyze(reference, basins=bset, lag_ps=lag_ps, **kwargs)
    rest = {k: v for k, v in kwargs.items() if k not in ("lags_ps", "discretizer", "n_clusters")}
    mod = analyze(model, basins=bset, lag_ps=ref.lag_ps, lags_ps=None if ref.its_lags_ps.size == 0 else ref.its_lags_ps,
                  discretizer=ref.discretizer, **rest)
    return KineticsComparison(model=mod, reference=ref, analysis_dt_ps=reference.dt_ps, warnings=notes)


# ---------------------------------------------------------------------- helpers
def lag_frames(value_ps, dt: float, argument: str = "lag_ps") -> int:
    """A time in ps as a whole number of frames of spacing ``dt`` (ValueError naming ``argument`` otherwise)."""
    try:
        v = float(value_ps)
    except (TypeError, ValueError):
        fail(argument, f"got {value_ps!r}", "give a time in ps")
    k = v / dt
    if not math.isfinite(k) or round(k) < 1 or abs(k - round(k)) > _FRAME_TOLERANCE * max(1.0, k):
        fail(argument, f"{v:g} ps is not a positive whole number of frames (frame spacing {dt:g} ps)",
             f"use a multiple of {dt:g} ps")
    return int(round(k))


def _common_spacing(model: Trajectories, reference: Trajectories):
    dm, dr = model.dt_ps, reference.dt_ps
    if abs(dm - dr) <= _FRAME_TOLERANCE * max(dm, dr):
        return model, reference, ""
    fine, coarse = (model, reference) if dm < dr else (reference, model)
    ratio = coarse.dt_ps / fine.dt_ps
    k = int(round(ratio))
    if abs(ratio - k) > 1e-6 * ratio:
        return model, reference, (f"frame spacings {dm:g} ps (model) and {dr:g} ps (reference) are not multiples of "
                                  "each other: analysed at their own spacing; first passages and tau_int are then not "
                                  "comparable")
    longest = max(len(seg) for seg in fine.segments)
    if longest <= k:  # not two frames at the coarser spacing in any trajectory
        which, other = ("model", "reference") if fine is model else ("reference", "model")
        fail(which, f"its longest trajectory spans {(longest - 1) * fine.dt_ps:g} ps, less than one frame spacing of "
             f"the {other} ({coarse.dt_ps:g} ps): nothing to compare at a common spacing",
             f"simulate each walker for many such spacings (e.g. {100 * coarse.dt_ps:g} ps: latentlab simulate "
             "--steps), or compare with a reference saved more often" if fine is model else
             f"record the model more often than every {coarse.dt_ps:g} ps (latentlab simulate --record-every), or "
             "compare with a longer reference")
    strided = fine.strided(k)  # its warnings say so
    return (strided, reference, "") if fine is model else (model, strided, "")


def _overlaps(masks: dict) -> list[str]:
    names = list(masks)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = sum(int((x & y).sum()) for x, y in zip(masks[a], masks[b]))
            if n:
                out.append(f"{a}/{b}: {n} frames")
    return out


def _ratio(a, b):
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    return a / b if b != 0 and math.isfinite(a) and math.isfinite(b) else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj
