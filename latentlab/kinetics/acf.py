"""Autocorrelation functions and integrated autocorrelation times of Q, over independent trajectories.

For a coordinate x the normalised autocorrelation function is

    rho(t) = C(t) / C(0),   C(t) = < (x(s) - m) (x(s + t) - m) >

with the mean ``m`` over all frames and ``C(t)`` averaged over every pair of frames
``t`` apart *inside* one trajectory (never across two): ``C(t) = sum_pairs / n_pairs(t)``.
A periodic coordinate theta (rad) enters as the unit vector ``z = exp(i theta)``:
``C(t) = Re < conj(z(s) - m) (z(s + t) - m) >``, which is invariant to where the
angle's origin lies (the average of the cos and sin autocorrelations weighted by
their variances).  For free rotational diffusion on the circle ``rho(t) = exp(-D t)``
exactly.

The integrated autocorrelation time is the area under ``rho``,

    tau_int = integral_0^inf rho(t) dt  ~=  dt (1/2 + sum_{t=1}^{M} rho(t))

(the trapezoidal rule; ``tau_int = 1/k`` for ``rho = exp(-k t)``), summed up to
Sokal's automatic window: the smallest ``M`` with ``M >= c g(M)``, ``g = 1 + 2 sum rho``
(the statistical inefficiency, ``g = 2 tau_int / dt``), ``c = 5`` as in
:mod:`latentlab.dynamics.statistics`.  Its standard error is Sokal's
``tau_int sqrt(2 (2M + 1) / N)`` with ``N`` frames in all.

Two things bound what a frame spacing ``dt`` resolves: uncorrelated frames give
``tau_int = dt / 2`` (the floor), and for ``rho = exp(-k t)`` the trapezoidal sum is
``(dt / 2) coth(k dt / 2) = (1/k) (1 + (k dt)^2 / 12 + ...)``.

References
----------
Sokal, "Monte Carlo methods in statistical mechanics: foundations and new algorithms"
(1997), section 3 (window, variance of tau_int).
"""

from __future__ import annotations

import math

import numpy as np

from latentlab.validation import fail

#: Sokal's window factor c, applied to g = 1 + 2 sum rho (as latentlab.dynamics.statistics does).
WINDOW_FACTOR = 5.0

#: Complex FFT entries held at once (~64 MiB).
_FFT_BUDGET = 1 << 22


def autocorrelation(segments, periodic: bool = False, max_lag: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised autocorrelation of one coordinate over independent trajectories.

    Parameters
    ----------
    segments : list of np.ndarray, each shape=(n_frames_i,)
        One coordinate of each trajectory (periodic ones in rad).
    periodic : bool
        Treat the coordinate as an angle (period 2 pi) through ``exp(i theta)``.
    max_lag : int, optional
        Largest lag in frames (default: the longest trajectory's length - 1).

    Returns
    -------
    rho : np.ndarray, shape=(max_lag + 1,)
        ``rho[0] = 1``; lags no trajectory reaches are NaN.
    n_pairs : np.ndarray, shape=(max_lag + 1,), int
        Number of frame pairs behind each lag.
    """
    segs = [np.asarray(s, dtype=np.float64).ravel() for s in segments]
    segs = [s for s in segs if s.size >= 1]
    if not segs:
        fail("segments", "holds no frames", "pass at least one non-empty trajectory")
    longest = max(s.size for s in segs)
    max_lag = longest - 1 if max_lag is None else int(min(max_lag, longest - 1))
    if max_lag < 0:
        fail("max_lag", f"got {max_lag}", "use a non-negative number of frames")
    values = [np.exp(1j * s) if periodic else s for s in segs]
    n_total = sum(v.size for v in values)
    mean = sum(v.sum() for v in values) / n_total
    acc = np.zeros(max_lag + 1)
    pairs = np.zeros(max_lag + 1, dtype=np.int64)
    # Trajectories of equal length go through one FFT as a batch (the SIM-file case: all walkers).
    by_length: dict[int, list[np.ndarray]] = {}
    for v in values:
        by_length.setdefault(v.size, []).append(v)
    for length, group in by_length.items():
        size = 1 << (2 * length - 1).bit_length()
        m = min(length, max_lag + 1)
        chunk = max(1, _FFT_BUDGET // size)  # bounded memory for many long walkers
        for a in range(0, len(group), chunk):
            x = np.stack(group[a:a + chunk]) - mean  # (n_traj, length)
            if periodic:
                spec = np.fft.fft(x, n=size, axis=1)
                corr = np.fft.ifft(spec * np.conj(spec), axis=1)[:, :m].real  # (n_traj, m)
            else:
                spec = np.fft.rfft(x, n=size, axis=1)
                corr = np.fft.irfft(spec * np.conj(spec), n=size, axis=1)[:, :m]
            acc[:m] += corr.sum(axis=0)
        pairs[:m] += len(group) * (length - np.arange(m))
    with np.errstate(invalid="ignore", divide="ignore"):
        acov = np.where(pairs > 0, acc / np.maximum(pairs, 1), np.nan)
    if not acov[0] > 0:
        rho = np.full(max_lag + 1, np.nan)
        rho[0] = 1.0
        return rho, pairs
    return acov / acov[0], pairs


def integrated_time(rho, dt_ps: float, n_frames: int, window_factor: float = WINDOW_FACTOR) -> dict:
    """Integrated autocorrelation time from a normalised ACF with Sokal's automatic window.

    Parameters
    ----------
    rho : array, shape=(n_lags,)
        Normalised autocorrelation at lags 0, 1, 2, ... frames (``rho[0] = 1``).
    dt_ps : float
        Frame spacing, ps.
    n_frames : int
        Frames behind the estimate (all trajectories), for the standard error.
    window_factor : float
        Sokal's c.

    Returns
    -------
    dict
        ``tau_ps`` (area under rho, ps), ``stderr_ps``, ``window_ps`` (where the sum stopped),
        ``window_reached`` (False when the ACF ran out before the window condition held:
        the trajectories are too short and tau is a lower bound).
    """
    rho = np.asarray(rho, dtype=np.float64)
    g = 1.0
    m = 0
    reached = False
    for m in range(1, len(rho)):
        if not math.isfinite(rho[m]):
            break
        g += 2.0 * rho[m]
        if m >= window_factor * g:
            reached = True
            break
    tau_steps = max(g, 0.0) / 2.0
    tau = tau_steps * float(dt_ps)
    stderr = tau * math.sqrt(2.0 * (2 * m + 1) / max(int(n_frames), 1))
    return {"tau_ps": tau, "stderr_ps": stderr, "window_ps": m * float(dt_ps), "window_reached": reached}


def acf_analysis(trajectories, max_lag_ps: float | None = None, window_factor: float = WINDOW_FACTOR) -> dict:
    """ACF and tau_int of every coordinate of a :class:`~latentlab.kinetics.Trajectories`.

    Parameters
    ----------
    trajectories : Trajectories
    max_lag_ps : float, optional
        Longest lag kept in the returned ACF (default: 4 windows of the slowest coordinate,
        at least 20 frames, at most the longest trajectory).
    window_factor : float
        Sokal's c.

    Returns
    -------
    dict
        ``lags_ps`` (n_lags,), ``acf`` {name: (n_lags,)}, ``tau_int_ps``, ``tau_int_stderr_ps``,
        ``tau_int_window_ps``, ``tau_int_window_reached`` ({name: value} each),
        ``tau_int_floor_ps`` (``dt / 2``: what uncorrelated frames give).
    """
    dt = trajectories.dt_ps
    n = trajectories.n_frames
    full = {}
    taus = {}
    for i, name in enumerate(trajectories.names):
        rho, _ = autocorrelation([s[:, i] for s in trajectories.segments], periodic=trajectories.periodic[i])
        full[name] = rho
        taus[name] = integrated_time(rho, dt, n, window_factor)
    longest = int(trajectories.lengths.max())
    if max_lag_ps is None:
        slowest = max(t["window_ps"] for t in taus.values())
        n_keep = int(min(longest - 1, max(20, math.ceil(4 * slowest / dt))))
    else:
        n_keep = int(min(longest - 1, max(1, round(float(max_lag_ps) / dt))))
    return {
        "lags_ps": (np.arange(n_keep + 1) * dt),
        "acf": {k: v[: n_keep + 1] for k, v in full.items()},
        "tau_int_ps": {k: t["tau_ps"] for k, t in taus.items()},
        "tau_int_stderr_ps": {k: t["stderr_ps"] for k, t in taus.items()},
        "tau_int_window_ps": {k: t["window_ps"] for k, t in taus.items()},
        "tau_int_window_reached": {k: t["window_reached"] for k, t in taus.items()},
        "tau_int_floor_ps": dt / 2.0,
    }
