"""Internal-coordinate maps: pair distances, the 3-atom (r1, r2, cos) map, bond angles, dihedrals.

Distances and angles among a rigid set of atoms are consistent maps (their
level sets are orbits of rigid motions; appendix B of Bruce et al., "Latent spaces for Langevin dynamics"); dihedrals of a
flexible molecule are not (bond lengths and angles vary inside a level set).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from latentlab.maps import geometry
from latentlab.maps.base import CGMap, Coordinate
from latentlab.validation import fail


def _local(atoms_in_order: list[int], groups: Sequence[Sequence[int]]) -> tuple[list[int], list[tuple[int, ...]]]:
    """Unique read atoms (first-seen order) and the groups re-indexed into them."""
    atoms: list[int] = []
    for g in groups:
        for a in g:
            if a not in atoms:
                atoms.append(int(a))
    pos = {a: i for i, a in enumerate(atoms)}
    return atoms, [tuple(pos[int(a)] for a in g) for g in groups]


def _check_groups(groups, size: int, argument: str, what: str) -> list[tuple[int, ...]]:
    out = []
    for g in groups:
        g = tuple(int(a) for a in g)
        if len(g) != size:
            fail(argument, f"entry {g} has {len(g)} atoms, a {what} needs {size}", f"give {size} atom indices per {what}")
        if len(set(g)) != size:
            fail(argument, f"entry {g} repeats an atom", f"a {what} needs {size} different atoms")
        out.append(g)
    if not out:
        fail(argument, "is empty", f"give at least one {what}")
    # i-j-k and k-j-i (and reversed pairs/dihedrals) are the same coordinate.
    if len({min(g, g[::-1]) for g in out}) != len(out):
        fail(argument, f"lists the same {what} twice (rank-deficient map)", "remove the duplicate")
    return out


def _atom_groups(groups, size: int, argument: str, what: str):
    """Checked atom groups (whole-system indices), the atoms they read and the groups re-indexed into those.

    Returns ``(groups, atoms, local)``: lists of ``size``-tuples, of ints (first-seen order) and of ``size``-tuples.
    """
    groups = _check_groups(groups, size, argument, what)
    atoms, local = _local([], groups)
    return groups, atoms, local


class DistanceMap(CGMap):
    """Distances between atom pairs, ``Q_p = |x_i - x_j|`` in nm.

    Parameters
    ----------
    pairs : sequence of (int, int)
        Atom index pairs (0-based, whole-system indices).
    """

    kind = "distances"
    formula = "d_ij = |x_i - x_j| for every pair (or the listed pairs)"


    def __init__(self, pairs: Sequence[Sequence[int]], n_atoms: int | None = None, spec: str | None = None):
        self.pairs, atoms, self._pairs = _atom_groups(pairs, 2, "pairs", "distance")
        super().__init__(atoms, [Coordinate(f"d{i}-{j}", "nm", bounds=(0.0, math.inf)) for i, j in self.pairs],
                         n_atoms=n_atoms, spec=spec)
        self._i = [p[0] for p in self._pairs]
        self._j = [p[1] for p in self._pairs]

    @classmethod
    def all_pairs(cls, atoms: Sequence[int], n_atoms: int | None = None, spec: str | None = None) -> "DistanceMap":
        atoms = list(atoms)
        if len(atoms) < 2:
            fail("atoms", f"selects {len(atoms)} atom(s); all-pairs distances need at least 2", "select more atoms")
        return cls([(atoms[a], atoms[b]) for a in range(len(atoms)) for b in range(a + 1, len(atoms))],
                   n_atoms=n_atoms, spec=spec)

    def to_dict(self):
        return {"kind": self.kind, "pairs": [list(p) for p in self.pairs], "n_atoms": self.n_atoms, "spec": self.spec}

    def evaluate(self, xs):
        return geometry.distance(xs[:, self._i], xs[:, self._j])

    def validate_geometry(self, xs):
        geometry.check_separated(xs, self._pairs, "distance map", self.atoms)


class TriangleMap(CGMap):
    """The 3-atom map ``Q = (r1, r2, cos)`` with vertex b (Bruce et al., "Latent spaces for Langevin dynamics").

    ``r1 = |a - b|``, ``r2 = |c - b|``, ``cos = u1 . u2`` with unit vectors
    ``u1 = (a - b)/r1``, ``u2 = (c - b)/r2`` (docs/theory.md section 1).

    Parameters
    ----------
    a, b, c : int
        Atom indices; b is the vertex.
    """

    kind = "triangle"
    formula = "r1 = |x_a - x_b|,  r2 = |x_c - x_b|,  cos = (x_a - x_b).(x_c - x_b) / (r1 r2)   (b = vertex)"


    def __init__(self, a: int, b: int, c: int, n_atoms: int | None = None, spec: str | None = None):
        _check_groups([(a, b, c)], 3, "atoms", "triangle")
        super().__init__([a, b, c], [Coordinate("r1", "nm", bounds=(0.0, math.inf)),
                                     Coordinate("r2", "nm", bounds=(0.0, math.inf)),
                                     Coordinate("cos", "1", bounds=(-1.0, 1.0))], n_atoms=n_atoms, spec=spec)

    def to_dict(self):
        return {"kind": self.kind, "atoms": list(self.atoms), "n_atoms": self.n_atoms, "spec": self.spec}

    def evaluate(self, xs):
        a, b, c = xs[:, 0], xs[:, 1], xs[:, 2]
        u = a - b
        v = c - b
        r1 = torch.linalg.vector_norm(u, dim=-1)
        r2 = torch.linalg.vector_norm(v, dim=-1)
        return torch.stack([r1, r2, (u * v).sum(-1) / (r1 * r2)], dim=-1)

    def validate_geometry(self, xs):
        geometry.check_separated(xs, [(0, 1), (2, 1)], "triangle map", self.atoms)
        geometry.check_not_collinear(xs, [(0, 1, 2)], "triangle map", self.atoms)

    def closed_form_effective_mass(self, Q, inverse_masses):
        """Closed-form ``A(Q)`` of docs/theory.md section 1, shape ``(n_frames, 3, 3)``."""
        return triangle_mass_matrix(Q, inverse_masses.to(Q))


def triangle_mass_matrix(Q: torch.Tensor, inverse_masses: torch.Tensor) -> torch.Tensor:
    """``A(Q)`` of the ``(r1, r2, cos)`` map, ``Q (W, 3) -> (W, 3, 3)``, from ``1/m`` of atoms a, b (vertex), c.

    ``A11 = 1/ma + 1/mb``, ``A22 = 1/mc + 1/mb``, ``A12 = cos/mb``, ``A13 = s/(mb r2)``, ``A23 = s/(mb r1)``,
    ``A33 = s [1/(ma r1^2) + 1/(mc r2^2) + (1/mb)(1/r1^2 + 1/r2^2 - 2 cos/(r1 r2))]`` with ``s = 1 - cos^2``.
    """
    ia, ib, ic = inverse_masses[0], inverse_masses[1], inverse_masses[2]
    r1, r2, c = Q[:, 0], Q[:, 1], Q[:, 2]
    s = 1.0 - c * c
    a11 = (ia + ib).expand_as(r1)
    a22 = (ic + ib).expand_as(r1)
    a33 = s * (ia / r1**2 + ic / r2**2 + ib * (1.0 / r1**2 + 1.0 / r2**2 - 2.0 * c / (r1 * r2)))
    a12, a13, a23 = c * ib, s * ib / r2, s * ib / r1
    return torch.stack([a11, a12, a13, a12, a22, a23, a13, a23, a33], -1).reshape(-1, 3, 3)


class AngleMap(CGMap):
    """Bond angles ``i-j-k`` (vertex j) in rad, in [0, pi]."""

    kind = "angles"
    formula = "theta_ijk = angle at j between x_i - x_j and x_k - x_j"


    def __init__(self, triples: Sequence[Sequence[int]], n_atoms: int | None = None, spec: str | None = None):
        self.triples, atoms, self._triples = _atom_groups(triples, 3, "triples", "angle")
        super().__init__(atoms, [Coordinate(f"angle{i}-{j}-{k}", "rad", bounds=(0.0, math.pi))
                                 for i, j, k in self.triples], n_atoms=n_atoms, spec=spec)
        self._idx = [[t[n] for t in self._triples] for n in range(3)]

    def to_dict(self):
        return {"kind": self.kind, "triples": [list(t) for t in self.triples], "n_atoms": self.n_atoms, "spec": self.spec}

    def evaluate(self, xs):
        i, j, k = self._idx
        return geometry.angle(xs[:, i], xs[:, j], xs[:, k])

    def validate_geometry(self, xs):
        geometry.check_separated(xs, [(t[0], t[1]) for t in self._triples] + [(t[2], t[1]) for t in self._triples],
                                 "angle map", self.atoms)
        geometry.check_not_collinear(xs, self._triples, "angle map", self.atoms)


class DihedralMap(CGMap):
    """Dihedral angles ``i-j-k-l`` in rad, periodic on (-pi, pi].

    Parameters
    ----------
    quads : sequence of (int, int, int, int)
    names : sequence of str, optional
        E.g. ``["phi", "psi"]``.
    """

    kind = "dihedrals"
    formula = "phi_ijkl = torsion of the bonds i-j, j-k, k-l, in (-pi, pi]"


    def __init__(self, quads: Sequence[Sequence[int]], n_atoms: int | None = None, names: Sequence[str] | None = None,
                 spec: str | None = None):
        self.quads, atoms, self._quads = _atom_groups(quads, 4, "quads", "dihedral")
        names = list(names) if names is not None else [f"dihedral{i}-{j}-{k}-{l}" for i, j, k, l in self.quads]
        if len(names) != len(self.quads):
            fail("names", f"has {len(names)} names for {len(self.quads)} dihedrals", "give one name per dihedral")
        super().__init__(atoms, [Coordinate(n, "rad", periodic=True) for n in names], n_atoms=n_atoms, spec=spec)
        self._idx = [[q[n] for q in self._quads] for n in range(4)]

    def to_dict(self):
        return {"kind": self.kind, "quads": [list(q) for q in self.quads], "names": self.names, "n_atoms": self.n_atoms,
                "spec": self.spec}

    def evaluate(self, xs):
        i, j, k, l = self._idx
        return geometry.dihedral(xs[:, i], xs[:, j], xs[:, k], xs[:, l])

    def validate_geometry(self, xs):
        pairs = [(q[n], q[n + 1]) for q in self._quads for n in range(3)]
        geometry.check_separated(xs, pairs, "dihedral map", self.atoms)
        triples = [q[:3] for q in self._quads] + [q[1:] for q in self._quads]
        geometry.check_not_collinear(xs, triples, "dihedral map", self.atoms)
