"""The exact friction step of coordinate friction as a power series in ``A``, without an eigen-decomposition.

With ``G = gamma I`` the friction part of latent Langevin at fixed Q, ``dP = -gamma A P dt + sqrt(2 kT gamma)
dW``, is solved exactly over a time ``t`` by (with ``B = gamma t A``, dimensionless)::

    P <- exp(-B) P + sqrt(2 kT gamma t) S(B) xi,   S(B) = sqrt((1 - exp(-2 B)) / (2 B)),   xi ~ N(0, I)

(the covariance ``kT A^-1 (1 - exp(-2 gamma t A))`` is ``2 kT gamma t (1 - exp(-2 B)) / (2 B)``; ``S(B)`` is its
symmetric square root, so ``S(B) xi`` has it exactly).  Both functions are power series in ``B``:
``exp(-x) = sum_k (-x)^k / k!`` and ``S(x) = 1 - x/2 + 5 x^2/24 - ...`` (the square root of
``(1 - exp(-2 x)) / (2 x) = sum_k (-2 x)^k / (k + 1)!`` term by term), convergent for ``|x| < pi``.  At the
sampler's usual frictions ``x = gamma t w`` is a few hundredths, so 5-7 terms give both to 1e-10: one
batched ``B R + c P`` product per term (Horner's scheme, both series in one pass), with the walkers last.
Beyond ``MAX_X`` the sampler uses the eigen-decomposition.

Unlike the eigen-decomposition this needs no positive eigenvalue: a singular A (a cosine at +-1) is no
special case (``S(0) = 1``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

#: Truncation error of both series (relative to ``|P|`` and ``|xi|``): below the fixed points' 1e-8 and the 6e-8
#: resolution of the float32 normals the sampler draws, by two orders.
TOLERANCE = 1e-10
#: Largest ``x = gamma t |A|`` summed as a series (20 terms); beyond it the eigen-decomposition is cheaper.
MAX_X = 1.0
_N_COEFFICIENTS = 48


def _coefficients() -> tuple[list[float], list[float]]:
    """Taylor coefficients of ``exp(-x)`` and of ``sqrt((1 - exp(-2 x)) / (2 x))`` about 0."""
    e = [(-1.0) ** k / math.factorial(k) for k in range(_N_COEFFICIENTS)]
    phi = [(-2.0) ** k / math.factorial(k + 1) for k in range(_N_COEFFICIENTS)]  # (1 - exp(-2x)) / (2x)
    s = [1.0] + [0.0] * (_N_COEFFICIENTS - 1)
    for k in range(1, _N_COEFFICIENTS):  # s * s = phi, term by term
        s[k] = 0.5 * (phi[k] - sum(s[j] * s[k - j] for j in range(1, k)))
    return e, s


EXP_COEFFICIENTS, ROOT_COEFFICIENTS = _coefficients()


@lru_cache(maxsize=None)
def _limits() -> tuple[float, ...]:
    """``limit[n]``: the largest ``x`` (on a grid 1 % apart) at which the terms after ``x^n`` add less than
    TOLERANCE to either series at ``|B| <= x``."""
    x = np.geomspace(1e-16, MAX_X, 4000)
    c = np.abs(EXP_COEFFICIENTS) + np.abs(ROOT_COEFFICIENTS)  # (K,)
    terms = c[None, :] * x[:, None] ** np.arange(c.size)[None, :]  # (X, K)
    tails = np.cumsum(terms[:, ::-1], axis=1)[:, ::-1]  # tails[:, k] = sum of terms k, k+1, ...
    out = []
    for n in range(c.size - 1):
        ok = tails[:, n + 1] < TOLERANCE
        out.append(float(x[ok].max()) if ok.any() else 0.0)
    return tuple(out)


def series_terms(x: float) -> int | None:
    """How many terms the series need at ``x = gamma t |A|`` (an upper bound on ``gamma t`` times A's largest
    eigenvalue), or None beyond ``MAX_X`` (or for a non-finite x)."""
    if not x <= MAX_X:
        return None
    for n, limit in enumerate(_limits()):
        if x <= limit:
            return max(n, 1)
    return None


def norm_bound(a: torch.Tensor) -> float:
    """``max_w |A_w|_inf`` (largest absolute row sum) of ``a (N, N, W)`` (walkers last): at least every
    eigenvalue's size."""
    return float(a.abs().sum(1).amax()) if a.numel() else 0.0


def ou_step(a: torch.Tensor, p: torch.Tensor, xi: torch.Tensor, gamma_t: float, kT: float, n_terms: int) -> torch.Tensor:
    """``exp(-B) P + sqrt(2 kT gamma t) S(B) xi`` with ``B = gamma_t A``, summed to ``n_terms`` (:func:`series_terms`).

    The walkers come last (``A[i, j, w]``), the layout in which a batch of small matrix-vector products is a
    plain vectorised multiply-add over the walkers (2-3x faster on a CPU than ``bmm`` of ``(W, N, N)``).

    Parameters
    ----------
    a : (N, N, W), A(Q) in Q-unit^2/amu;  p, xi : (N, W), momenta and standard normals
    gamma_t : float, gamma (amu/ps) times the time (ps);  kT : float, kJ/mol

    Returns
    -------
    (N, W) momenta after the friction step
    """
    b = a * gamma_t
    c = math.sqrt(2.0 * kT * gamma_t)
    e, s = EXP_COEFFICIENTS, ROOT_COEFFICIENTS
    r = torch.add(p * e[n_terms], xi, alpha=c * s[n_terms])
    for k in range(n_terms - 1, -1, -1):  # Horner: r <- (e_k P + c s_k xi) + B r
        r = (b * r[None]).sum(1).add_(p, alpha=e[k]).add_(xi, alpha=c * s[k])
    return r
