"""Which potential V the latent Langevin dynamics uses (THEORY.md section 2).

``V(Q) = A_pmf(Q) + c * kT * ln det A(Q)`` with the coefficient ``c`` named by
the convention:

``consistent`` (c = -1/2, the default)
    ``V = A_pmf - (kT/2) ln det A``: Langevin dynamics with ``H = 1/2 P^T A P + V``
    samples the correct marginal ``p(Q)`` (integrate ``exp(-beta H)`` over P).
``seed_eq9`` (c = +1/2)
    The seed's eq. 9, ``V_seed = A_pmf + (kT/2) ln det A``; its dynamics samples
    ``p(Q) / det A(Q)``, biased wherever det A varies (kept to reproduce the seed).
``pmf`` (c = 0)
    The potential of mean force itself; the right W for comparing ``exp(-W/kT)``
    with a histogram (the seed's Fig. 1), *not* for the dynamics.
"""

from __future__ import annotations

from latentlab.validation import fail

LOGDET_COEFFICIENT = {"consistent": -0.5, "seed_eq9": 0.5, "pmf": 0.0}
CONVENTIONS = tuple(LOGDET_COEFFICIENT)


def logdet_coefficient(convention: str) -> float:
    """Coefficient ``c`` of ``kT ln det A`` in ``V`` for a named convention."""
    if convention not in LOGDET_COEFFICIENT:
        fail("convention", f"unknown convention {convention!r}", f"use one of {', '.join(CONVENTIONS)}")
    return LOGDET_COEFFICIENT[convention]
