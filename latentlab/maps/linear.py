"""Linear maps ``Q = Xi x``: atom slices, centre-of-mass beads, any matrix.

``Xi`` has shape ``(n_beads, n_read)``; each bead position is a weighted sum
of read-atom positions, so ``Q`` has ``3 n_beads`` Cartesian components in nm.
Rows may overlap (an atom may feed several beads).  With constant masses
``A = Xi M^-1 Xi^T`` (times the 3x3 identity) is constant: a linear map is
always consistent (docs/theory.md section 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from latentlab.maps.base import CGMap, Coordinate
from latentlab.validation import as_tensor, check_finite, check_masses, fail


class LinearMap(CGMap):
    """Bead positions as linear combinations of atom positions.

    Parameters
    ----------
    matrix : array, shape=(n_beads, n_read)
        Weights ``Xi``; row b gives bead b as ``sum_a Xi[b, a] x_a``.
    atoms : sequence of int, length n_read
        The atoms the columns refer to.
    n_atoms : int, optional
        Size of the whole system, for validation.
    bead_names : sequence of str, optional
    """

    is_linear = True
    kind = "linear"
    formula = "Q = Xi x: bead positions as fixed linear combinations of atom positions"

    def __init__(self, matrix, atoms: Sequence[int], n_atoms: int | None = None,
                 bead_names: Sequence[str] | None = None, spec: str | None = None):
        xi = as_tensor(matrix, "matrix", dtype=torch.float64)
        if xi.dim() != 2:
            fail("matrix", f"has shape {tuple(xi.shape)}, expected (n_beads, n_read)", "pass a 2-D weight matrix")
        if xi.shape[1] != len(atoms):
            fail("matrix", f"has {xi.shape[1]} columns but {len(atoms)} atoms were given",
                 "give one column per selected atom")
        check_finite(xi, "matrix", frame_axis=None)
        rank = int(torch.linalg.matrix_rank(xi))
        if rank < xi.shape[0]:
            fail("matrix", f"has rank {rank} < {xi.shape[0]} beads (rank-deficient map: some beads are combinations of others)",
                 "remove duplicate or dependent beads")
        n_beads = xi.shape[0]
        names = list(bead_names) if bead_names is not None else [f"b{b}" for b in range(n_beads)]
        if len(names) != n_beads:
            fail("bead_names", f"has {len(names)} names for {n_beads} beads", "give one name per bead")
        coords = [Coordinate(f"{n}.{ax}", "nm") for n in names for ax in "xyz"]
        super().__init__(atoms, coords, n_atoms=n_atoms, spec=spec)
        self.matrix = xi
        self.bead_names = names
        if spec and spec.strip().lower().startswith("com:"):
            self.kind, self.formula = "com", "Q = sum_i m_i x_i / sum_i m_i per bead"
        elif spec and spec.strip().lower().startswith("linear:"):
            self.formula = "Q = Cartesian positions of the selected atoms"

    def to_dict(self):
        return {"kind": "linear-matrix", "matrix": self.matrix.clone(), "atoms": list(self.atoms),
                "bead_names": list(self.bead_names), "n_atoms": self.n_atoms, "spec": self.spec}

    @classmethod
    def from_slice(cls, atoms: Sequence[int], n_atoms: int | None = None, names: Sequence[str] | None = None,
                   spec: str | None = None) -> "LinearMap":
        """Keep the Cartesian positions of ``atoms`` (``Xi`` = rows of the identity)."""
        atoms = list(atoms)
        if len(set(atoms)) != len(atoms):
            fail("atoms", "lists an atom twice", "select each atom once")
        return cls(np.eye(len(atoms)), atoms, n_atoms=n_atoms,
                   bead_names=names or [f"a{a}" for a in atoms], spec=spec)

    @classmethod
    def from_centers_of_mass(cls, groups: Sequence[Sequence[int]], masses, n_atoms: int | None = None,
                             spec: str | None = None) -> "LinearMap":
        """One bead per group at the group's centre of mass; groups may overlap.

        Parameters
        ----------
        groups : sequence of sequence of int
            Atom indices of each bead.
        masses : array, shape=(n_atoms,), amu
            Masses of the whole system (the weights are ``m_a / sum m``).
        """
        m = check_masses(masses, len(masses), "masses", dtype=torch.float64)
        atoms = sorted({int(a) for g in groups for a in g})
        if not atoms:
            fail("groups", "are empty", "give at least one atom per bead")
        col = {a: i for i, a in enumerate(atoms)}
        xi = torch.zeros(len(groups), len(atoms), dtype=torch.float64)
        for b, g in enumerate(groups):
            if len(g) == 0:
                fail("groups", f"bead {b} has no atoms", "give at least one atom per bead")
            if max(g) >= len(m):
                fail("groups", f"bead {b} uses atom {max(g)} but masses has {len(m)} entries", "pass masses of the whole system")
            tot = sum(float(m[a]) for a in g)
            for a in g:
                xi[b, col[int(a)]] = float(m[a]) / tot
        return cls(xi, atoms, n_atoms=n_atoms, bead_names=[f"com{b}" for b in range(len(groups))], spec=spec)

    def evaluate(self, xs: torch.Tensor) -> torch.Tensor:
        xi = self.matrix.to(dtype=xs.dtype, device=xs.device)
        beads = torch.einsum("br,frk->fbk", xi, xs)  # (F, B, 3)
        return beads.reshape(xs.shape[0], -1)

    def jacobian_read(self, xs: torch.Tensor) -> torch.Tensor:
        # J[(b,k), r, l] = Xi[b, r] delta_kl: constant, built directly.
        xi = self.matrix.to(dtype=xs.dtype, device=xs.device)
        eye = torch.eye(3, dtype=xs.dtype, device=xs.device)
        j = torch.einsum("br,kl->bkrl", xi, eye).reshape(self.n_cg, len(self.atoms), 3)
        return j.expand(xs.shape[0], -1, -1, -1)

    def closed_form_effective_mass(self, Q, inverse_masses):
        xi = self.matrix.to(dtype=Q.dtype, device=Q.device)
        a_beads = xi @ torch.diag(inverse_masses.to(Q)) @ xi.T  # (B, B)
        a = torch.kron(a_beads, torch.eye(3, dtype=Q.dtype, device=Q.device))
        return a.expand(Q.shape[0], -1, -1)
