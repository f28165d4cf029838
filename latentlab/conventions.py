"""Which potential V the latent Langevin dynamics uses (docs/theory.md section 2).

``V(Q) = A_pmf(Q) + c * kT * ln det A(Q)`` with the coefficient ``c`` named by the convention:

``consistent`` (c = -1/2, the default)
    ``V = A_pmf - (kT/2) ln det A``: Langevin dynamics with ``H = 1/2 P^T A P + V`` samples the correct
    marginal ``p(Q)`` (integrate ``exp(-beta H)`` over P).
``eq9`` (c = +1/2)
    Eq. 9 of Bruce et al., "Latent spaces for Langevin dynamics": ``A_pmf + (kT/2) ln det A``.  It follows
    from constraining velocities instead of momenta; its dynamics samples ``p(Q) / det A(Q)``, biased
    wherever det A varies.  Kept to reproduce the paper and to show the bias.
``pmf`` (c = 0)
    The potential of mean force itself; the right W for comparing ``exp(-W/kT)`` with a histogram (the
    paper's Fig. 1), *not* for the dynamics.

The name ``seed_eq9`` of latentlab 0.1.0 is still accepted (with a deprecation warning) and means ``eq9``.
"""

from __future__ import annotations

import warnings

from latentlab.validation import fail

LOGDET_COEFFICIENT = {"consistent": -0.5, "eq9": 0.5, "pmf": 0.0}
CONVENTIONS = tuple(LOGDET_COEFFICIENT)

#: Old names still read (model files of 0.1.0, scripts), and what they mean now.
DEPRECATED = {"seed_eq9": "eq9"}


def canonical(convention: str, warn: bool = True) -> str:
    """The current name of ``convention`` (``seed_eq9`` -> ``eq9``, with a DeprecationWarning); refuses unknown names."""
    if convention in DEPRECATED:
        new = DEPRECATED[convention]
        if warn:
            warnings.warn(f"the convention name {convention!r} is deprecated; use {new!r}", DeprecationWarning,
                          stacklevel=3)
        return new
    if convention not in LOGDET_COEFFICIENT:
        fail("convention", f"unknown convention {convention!r}", f"use one of {', '.join(CONVENTIONS)}")
    return convention


def logdet_coefficient(convention: str) -> float:
    """Coefficient ``c`` of ``kT ln det A`` in ``V`` for a named convention."""
    return LOGDET_COEFFICIENT[canonical(convention)]
