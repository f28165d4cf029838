"""Effective mass ``A(q) = J(q) M^-1 J(q)^T`` (``R^-1`` in Bruce et al., "Latent spaces for Langevin dynamics"), batched.

Masses are constant per atom (the usual case: ``(n_atoms,)`` amu, from the
topology) or position dependent: a callable ``masses(positions)`` returning
per-atom masses ``(n_frames, n_atoms)`` or a full mass matrix
``(n_frames, 3 n_atoms, 3 n_atoms)`` (eq. 5 of Bruce et al.).  Units of A: Q-unit^2 / amu.
"""

from __future__ import annotations

import torch

from latentlab.maps.base import CGMap
from latentlab.validation import check_masses, check_positions, fail


def masses_from_topology(topology) -> torch.Tensor:
    """Per-atom masses ``(n_atoms,)`` in amu from an mdtraj topology."""
    m = [a.element.mass if a.element is not None else 0.0 for a in topology.atoms]
    return check_masses(torch.tensor(m, dtype=torch.float64), topology.n_atoms, "topology masses")


def inverse_mass_read(cg_map: CGMap, positions: torch.Tensor, masses) -> torch.Tensor:
    """Inverse mass of the atoms the map reads.

    Returns
    -------
    torch.Tensor
        ``(n_read,)`` for constant masses, ``(n_frames, n_read)`` for
        position-dependent diagonal masses, ``(n_frames, 3 n_read, 3 n_read)``
        for a full position-dependent mass matrix.  Units 1/amu.
    """
    n_frames, n_atoms = positions.shape[:2]
    idx = torch.as_tensor(cg_map.atoms, device=positions.device)
    if callable(masses):
        m = masses(positions)
        m = torch.as_tensor(m, dtype=positions.dtype, device=positions.device)
        if m.shape == (n_frames, n_atoms):
            if bool((m <= 0).any()) or not bool(torch.isfinite(m).all()):
                fail("masses", "the mass function returned non-positive or non-finite masses", "return masses > 0 amu")
            return 1.0 / m[:, idx]
        if m.shape == (n_frames, 3 * n_atoms, 3 * n_atoms):
            try:
                minv = torch.linalg.inv(m)
            except RuntimeError:
                fail("masses", "the mass matrix returned is singular", "return a positive-definite mass matrix")
            flat = (3 * idx[:, None] + torch.arange(3, device=idx.device)).reshape(-1)
            return minv[:, flat][:, :, flat]
        fail("masses", f"the mass function returned shape {tuple(m.shape)}",
             f"return per-atom masses ({n_frames}, {n_atoms}) or a mass matrix ({n_frames}, {3 * n_atoms}, {3 * n_atoms})")
    m = check_masses(masses, n_atoms, "masses", dtype=positions.dtype, device=positions.device)
    return 1.0 / m[idx]


def contract_mass(jr: torch.Tensor, minv: torch.Tensor, right: torch.Tensor | None = None) -> torch.Tensor:
    """``J M^-1 K^T`` for read-atom Jacobians ``jr (n_frames, n_cg, n_read, 3)``; ``K`` defaults to J."""
    kr = jr if right is None else right
    if minv.dim() == 1:
        return torch.einsum("fnrk,r,fmrk->fnm", jr, minv, kr)
    if minv.dim() == 2:
        return torch.einsum("fnrk,fr,fmrk->fnm", jr, minv, kr)
    f, n = jr.shape[:2]
    return jr.reshape(f, n, -1) @ minv @ kr.reshape(f, kr.shape[1], -1).transpose(1, 2)


def check_full_rank(a: torch.Tensor, argument: str = "map") -> None:
    """Refuse (numerically) singular effective masses, naming the frames."""
    w = torch.linalg.eigvalsh(a)  # (F, N), ascending
    tol = torch.finfo(a.dtype).eps * 1e3 * a.shape[-1]
    bad = (w[:, 0] <= tol * w[:, -1].abs()) | ~torch.isfinite(w).all(-1)
    if bool(bad.any()):
        frames = torch.nonzero(bad).flatten().tolist()
        fail(argument, f"the Jacobian J is rank-deficient (A = J M^-1 J^T singular) in {len(frames)} frame(s), "
             f"first {frames[:5]}", "remove dependent CG coordinates (duplicates, or more outputs than the atoms allow)")


def effective_mass(cg_map: CGMap, positions, masses, check: bool = True) -> torch.Tensor:
    """Batched effective mass ``A(q) = J M^-1 J^T``.

    Parameters
    ----------
    cg_map : CGMap
    positions : array, shape=(n_frames, n_atoms, 3), nm
    masses : array, shape=(n_atoms,), amu, or callable
        See the module docstring for position-dependent masses.
    check : bool
        Raise a ValueError if A is singular in some frame (rank-deficient map).

    Returns
    -------
    torch.Tensor, shape=(n_frames, n_cg, n_cg)
    """
    x = check_positions(positions, "positions", n_atoms=cg_map.n_atoms)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    xs = cg_map.select(x)
    cg_map.validate_geometry(xs)
    jr = cg_map.jacobian_read(xs)  # (F, N, R, 3)
    a = contract_mass(jr, inverse_mass_read(cg_map, x, masses))
    if check:
        check_full_rank(a)
    return a
