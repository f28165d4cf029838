"""Instantaneous mean-force estimators and force-matching targets.

For any ``B(q)`` (N x n) with ``B J^T = I`` (eq. 10 of Bruce et al.; Ciccotti et al. 2005)

    grad_Q A_pmf(Q) = < B grad_q U - kT div_q B >_{f(q) = Q},  (div_q B)_i = sum_j dB_ij/dq_j

and the frame-by-frame force-matching target for ``V`` is

    g(q) = B grad_q U - kT div_q B + c kT B grad_q ln det A(q)

with ``c`` from :mod:`latentlab.conventions` (-1/2 for ``consistent``).  For a
consistent map ``ln det A`` is a function of Q, and ``B grad_q h = grad_Q h``
for any such h because ``grad_q h = J^T grad_Q h``; for an inconsistent map
the same expression is the natural frame-wise estimate.

Two choices of B (both exact in expectation):

``mass-weighted``  ``B = A^-1 J M^-1``
``pseudo-inverse`` ``B = (J J^T)^-1 J``

Everything is batched with ``torch.func`` (``vmap`` over frames, ``jacrev``
and ``jacfwd`` for J and div B); frames are processed in chunks to bound memory.

References
----------
Noid et al., J. Chem. Phys. 128, 244114 (2008): force matching's minimiser is the mean force.
Ciccotti, Kapral, Vanden-Eijnden, ChemPhysChem 6, 1809 (2005): mean force for any B with B J^T = I.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd, jacrev, vmap

from latentlab.conventions import logdet_coefficient
from latentlab.maps.base import CGMap
from latentlab.maps.mass import check_full_rank, inverse_mass_read
from latentlab.validation import check_positions, check_positive, fail

METHODS = ("mass-weighted", "pseudo-inverse")


def _b_matrix(jac: torch.Tensor, minv: torch.Tensor, method: str) -> torch.Tensor:
    """``B`` for one frame: ``jac (N, n)``, ``minv (n,)`` -> ``(N, n)``.

    Uses an explicit inverse of the small N x N matrix: forward-mode AD of
    ``torch.linalg.solve`` under ``vmap`` returned wrong values for all but the
    first frame in torch 2.13 (a regression test compares batched with per-frame).
    """
    right = jac * minv if method == "mass-weighted" else jac  # (N, n)
    return torch.linalg.inv(right @ jac.T) @ right


def _frame_terms(cg_map: CGMap, method: str, need_div: bool, need_logdet: bool):
    """Per-frame function ``(xs_flat (n,), minv (n,)) -> (B (N, n), div B (N,), grad_q ln det A (n,))``."""

    jac_fn = cg_map.flat_jacobian_fn()

    def b_of(xf, minv):
        return _b_matrix(jac_fn(xf), minv, method)

    def logdet_a(xf, minv):
        jac = jac_fn(xf)
        return torch.logdet((jac * minv) @ jac.T)

    def terms(xf, minv):
        b = b_of(xf, minv)
        div = torch.diagonal(jacfwd(b_of)(xf, minv), dim1=-2, dim2=-1).sum(-1) if need_div else b.new_zeros(b.shape[0])
        gld = jacrev(logdet_a)(xf, minv) if need_logdet else xf.new_zeros(xf.shape)
        return b, div, gld

    return terms


def check_frames(positions, forces, n_atoms: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated floating tensors ``positions, forces (n_frames, n_atoms, 3)`` (nm, kJ/mol/nm), one force per frame."""
    x = check_positions(positions, "positions", n_atoms=n_atoms)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    f = check_positions(forces, "forces", n_atoms=x.shape[1], dtype=x.dtype, device=x.device)
    if f.shape[0] != x.shape[0]:
        fail("forces", f"has {f.shape[0]} frames but positions has {x.shape[0]}", "pass one force frame per position frame")
    return x, f


def _prepare(cg_map, positions, forces, masses, kT):
    x, f = check_frames(positions, forces, cg_map.n_atoms)
    check_positive(kT, "kT", "kJ/mol")
    if callable(masses):
        fail("masses", "position-dependent masses are not supported by the mean-force estimator",
             "pass constant per-atom masses (n_atoms,) in amu")
    minv = inverse_mass_read(cg_map, x, masses)  # (R,)
    xs = cg_map.select(x)
    cg_map.validate_geometry(xs)
    grad_u = -f[:, list(cg_map.atoms)].reshape(x.shape[0], -1)  # (F, n) kJ/mol/nm
    return xs.reshape(x.shape[0], -1), grad_u, minv.repeat_interleave(3)


def _target(cg_map, positions, forces, masses, kT, method, coefficient, batch_size):
    if method not in METHODS:
        fail("method", f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    xf, grad_u, minv = _prepare(cg_map, positions, forces, masses, kT)
    linear = cg_map.is_linear
    terms = _frame_terms(cg_map, method, need_div=not linear, need_logdet=(coefficient != 0.0 and not linear))
    jac_fn = cg_map.flat_jacobian_fn()
    batched = vmap(terms, in_dims=(0, None))
    out = []
    for start in range(0, xf.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        b, div, gld = batched(xf[sl], minv)  # (F, N, n), (F, N), (F, n)
        g = torch.einsum("fni,fi->fn", b, grad_u[sl]) - kT * div
        if coefficient != 0.0 and not linear:
            g = g + coefficient * kT * torch.einsum("fni,fi->fn", b, gld)
        if not bool(torch.isfinite(g).all()):
            jac = vmap(jac_fn)(xf[sl][:8])
            check_full_rank((jac * minv) @ jac.transpose(1, 2))
            fail("positions", "the mean force is not finite in some frames (the map is singular there)",
                 "drop frames where the map's coordinates are degenerate")
        out.append(g)
    return torch.cat(out)


def local_pmf_gradient(cg_map: CGMap, positions, forces, masses, kT: float, method: str = "mass-weighted",
                       batch_size: int = 4096) -> torch.Tensor:
    """Instantaneous estimator ``B grad_q U - kT div_q B`` of ``grad_Q A_pmf``.

    Parameters
    ----------
    cg_map : CGMap
    positions : array, shape=(n_frames, n_atoms, 3), nm
    forces : array, shape=(n_frames, n_atoms, 3), kJ/mol/nm
        ``F = -grad U`` (as OpenMM reports; constraint-free, see the data docs).
    masses : array, shape=(n_atoms,), amu
    kT : float, kJ/mol
    method : {"mass-weighted", "pseudo-inverse"}
    batch_size : int
        Frames per vectorised chunk.

    Returns
    -------
    torch.Tensor, shape=(n_frames, n_cg)
        In kJ/mol per unit of each Q. Its conditional mean at fixed Q is ``grad_Q A_pmf``.
    """
    return _target(cg_map, positions, forces, masses, kT, method, 0.0, batch_size)


def force_matching_target(cg_map: CGMap, positions, forces, masses, kT: float, convention: str = "consistent",
                          method: str = "mass-weighted", batch_size: int = 4096) -> torch.Tensor:
    """Frame-wise force-matching target ``g(q)`` for ``grad_Q V`` (docs/theory.md section 3).

    ``g = B grad U - kT div B + c kT B grad_q ln det A`` with ``c`` set by
    ``convention`` (``consistent``: -1/2, ``eq9``: +1/2, ``pmf``: 0).
    Other arguments and the return value as in :func:`local_pmf_gradient`.
    """
    return _target(cg_map, positions, forces, masses, kT, method, logdet_coefficient(convention), batch_size)
