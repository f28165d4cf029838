"""Error bars for correlated samples from many walkers.

The standard error of a time average is ``sqrt(var * tau_int / (n_walkers * n_times))``
with the integrated autocorrelation time ``tau_int = 1 + 2 sum_t rho(t)``,
estimated from the walker-averaged autocorrelation function with Sokal's
automatic window (the sum stops at the first t >= c tau_int(t), c = 5).

References
----------
Sokal, "Monte Carlo methods in statistical mechanics" (1997), section 3.
"""

from __future__ import annotations

import numpy as np
import torch

from latentlab.validation import fail


def _as_2d(x) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        fail("samples", f"has shape {a.shape}, expected (n_times, n_walkers)", "pass one observable at a time")
    if a.shape[0] < 4:
        fail("samples", f"has {a.shape[0]} time points", "record at least 4 time points per walker")
    return a


def autocorrelation(x) -> np.ndarray:
    """Normalised autocorrelation ``rho(t)``, shape ``(n_times,)``, averaged over walkers.

    Parameters
    ----------
    x : array, shape=(n_times, n_walkers)
    """
    a = _as_2d(x)
    n = a.shape[0]
    a = a - a.mean(axis=0, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spec = np.fft.rfft(a, n=size, axis=0)
    acov = np.fft.irfft(spec * np.conj(spec), n=size, axis=0)[:n].mean(axis=1) / n
    if acov[0] <= 0:
        return np.ones(n)
    return acov / acov[0]


def integrated_autocorrelation_time(x, window_factor: float = 5.0) -> float:
    """``tau_int = 1 + 2 sum rho(t)`` in units of the sampling interval (1 for uncorrelated data).

    Parameters
    ----------
    x : array, shape=(n_times, n_walkers)
    window_factor : float
        Sokal's c: the window is the smallest M with M >= c tau_int(M).
    """
    rho = autocorrelation(x)
    tau = 1.0
    for m in range(1, len(rho)):
        tau += 2.0 * rho[m]
        if m >= window_factor * tau:
            break
    return max(tau, 1.0)


def mean_and_stderr(x) -> tuple[float, float, float]:
    """Mean, standard error and ``tau_int`` of an observable sampled by many walkers.

    Parameters
    ----------
    x : array, shape=(n_times, n_walkers)
    """
    a = _as_2d(x)
    tau = integrated_autocorrelation_time(a)
    var = a.var(ddof=1)
    return float(a.mean()), float(np.sqrt(var * tau / a.size)), float(tau)
