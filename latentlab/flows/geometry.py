"""Rigid-body removal and internal coordinates for molecular flows.

Rigid frame
-----------
A molecule's density ``exp(-beta U(x)) / Z`` on ``R^(3 n_atoms)`` does not
depend on the position and orientation of the molecule.  :class:`RigidFrame`
fixes 6 Cartesian coordinates: frame atom ``a0`` at the origin, ``a1`` on the
positive z axis, ``a2`` in the xz plane with ``x > 0``.  The remaining
``3 n_atoms - 6`` *reduced* coordinates ``y = (z_1, x_2, z_2, x_3, y_3, z_3, ...)``
have the marginal density

    p(y) = exp(-beta U(x(y))) |z_1|^2 |x_2| / Z'

because the volume element of the 6 removed degrees of freedom (a
translation and a rotation) is ``|z_1|^2 |x_2| dt dR`` (docs/theory.md
section 5).  The authors' code of Stupp & Koutsourelakis ("Energy-based
coarse-graining in molecular dynamics: a flow-based framework without data")
fixes the same 6 coordinates but omits this factor; latentlab includes it
(:meth:`RigidFrame.log_jacobian`).

Z-matrix
--------
:func:`build_zmatrix` turns a bonded topology into a Z-matrix: every atom but
the first three is placed from three earlier atoms ``(c, b, a)`` by a bond
length ``|d - c|``, an angle ``d-c-b`` and a torsion ``a-b-c-d``.  The tree is
grown breadth-first from a heavy root, heavy branches with more atoms first,
so that along a chain each torsion is the proper one (for alanine dipeptide
``C-N-CA-C`` is phi and ``N-CA-C-N`` is psi); a second or third atom on the
same centre is placed relative to its first sibling (``s-b-c-d``: an offset
of about +-120 deg that hardly moves, e.g. the other hydrogens of a methyl).
:class:`ZMatrixTransform` maps internal coordinates to the reduced frame
coordinates with the exact log-Jacobian
``log r_1^0 + log r_2 + sum_atoms log(r^2 sin theta)`` (the ``r_1^2 r_2 sin theta_2``
of the first atoms is the rigid frame's factor, carried by the target).

Units: nm, radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from latentlab.validation import fail


# ---------------------------------------------------------------------------- rigid frame


class RigidFrame:
    """The 6 fixed Cartesian coordinates and the reduced coordinates of a molecule.

    Parameters
    ----------
    n_atoms : int, >= 3
    atoms : tuple of 3 int
        Frame atoms ``(a0, a1, a2)``: origin, on the +z axis, in the xz plane (x > 0).
    """

    def __init__(self, n_atoms: int, atoms=(0, 1, 2)):
        a = [int(i) for i in atoms]
        if n_atoms < 3 or len(set(a)) != 3 or min(a) < 0 or max(a) >= n_atoms:
            fail("atoms", f"got {atoms} for {n_atoms} atoms", "pass three distinct atom indices of a molecule with >= 3 atoms")
        self.n_atoms = int(n_atoms)
        self.atoms = tuple(a)
        self.others = [i for i in range(n_atoms) if i not in a]
        #: order of the atoms in the reduced vector: a1 (z), a2 (x, z), then the others (x, y, z)
        self.order = [a[1], a[2], *self.others]
        stacked = [a[0], a[1], a[2], *self.others]
        self._inverse_order = torch.as_tensor(np.argsort(stacked), dtype=torch.long)

    @property
    def dim(self) -> int:
        return 3 * self.n_atoms - 6

    def positions(self, y: torch.Tensor) -> torch.Tensor:
        """Reduced ``(..., 3 n_atoms - 6)`` -> positions ``(..., n_atoms, 3)`` nm in the canonical frame."""
        shape = y.shape[:-1]
        zero = torch.zeros_like(y[..., 0])
        head = torch.stack([torch.stack([zero, zero, zero], -1), torch.stack([zero, zero, y[..., 0]], -1),
                            torch.stack([y[..., 1], zero, y[..., 2]], -1)], dim=-2)  # a0, a1, a2
        rest = y[..., 3:].reshape(*shape, len(self.others), 3)
        x = torch.cat([head, rest], dim=-2)  # atoms in the order a0, a1, a2, others (functional: vmap-safe)
        return x.index_select(-2, self._inverse_order.to(y.device))

    def canonical(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotate and translate ``(..., n_atoms, 3)`` into the frame (a0 at 0, a1 on +z, a2 in xz with x > 0)."""
        a0, a1, a2 = self.atoms
        x = positions - positions[..., a0:a0 + 1, :]
        ez = x[..., a1, :]
        ez = ez / ez.norm(dim=-1, keepdim=True)
        v = x[..., a2, :]
        ex = v - (v * ez).sum(-1, keepdim=True) * ez
        ex = ex / ex.norm(dim=-1, keepdim=True)
        ey = torch.linalg.cross(ez, ex, dim=-1)
        rot = torch.stack([ex, ey, ez], dim=-2)  # rows: new axes
        return x @ rot.transpose(-1, -2)

    def reduced(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions ``(..., n_atoms, 3)`` (any orientation) -> reduced ``(..., 3 n_atoms - 6)``."""
        return self.pack(self.canonical(positions))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """Positions already in the canonical frame ``(..., n_atoms, 3)`` -> reduced ``(..., 3 n_atoms - 6)``."""
        a0, a1, a2 = self.atoms
        head = torch.stack([x[..., a1, 2], x[..., a2, 0], x[..., a2, 2]], dim=-1)
        return torch.cat([head, x[..., self.others, :].flatten(-2)], dim=-1)

    @staticmethod
    def log_jacobian(y: torch.Tensor) -> torch.Tensor:
        """``log(|z_1|^2 |x_2|)``: the density factor of the removed rigid-body motion, shape ``y.shape[:-1]``."""
        return 2.0 * torch.log(y[..., 0].abs()) + torch.log(y[..., 1].abs())


# ---------------------------------------------------------------------------- z-matrix


@dataclass
class ZMatrix:
    """Placement order of a molecule.

    Attributes
    ----------
    atoms : tuple of 3 int
        ``(a0, a1, a2)``: the rigid frame; ``a1`` bonded to ``a0``; ``a2`` bonded to ``c2``.
    c2 : int
        ``a0`` or ``a1``: the atom ``a2`` is bonded to (its angle is ``a2-c2-b2`` with ``b2`` the other).
    rows : np.ndarray, shape=(n_atoms - 3, 4), int
        ``(d, c, b, a)`` per remaining atom, in placement order: bond d-c, angle d-c-b, torsion a-b-c-d.
    proper : np.ndarray, shape=(n_atoms - 3,), bool
        True where the torsion ``a-b-c-d`` runs along bonds (a rotatable dihedral), False for a sibling offset.
    """

    atoms: tuple
    c2: int
    rows: np.ndarray
    proper: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.rows) + 3

    @property
    def dim(self) -> int:
        return 3 * self.n_atoms - 6

    def ic_names(self, atom_names=None) -> list[str]:
        """Names of the internal coordinates in the order of the IC vector."""
        nm = (lambda i: atom_names[i]) if atom_names is not None else str
        a0, a1, a2 = self.atoms
        b2 = a0 if self.c2 == a1 else a1
        out = [f"r({nm(a0)}-{nm(a1)})", f"r({nm(self.c2)}-{nm(a2)})", f"angle({nm(b2)}-{nm(self.c2)}-{nm(a2)})"]
        for d, c, b, a in self.rows:
            out += [f"r({nm(c)}-{nm(d)})", f"angle({nm(b)}-{nm(c)}-{nm(d)})", f"torsion({nm(a)}-{nm(b)}-{nm(c)}-{nm(d)})"]
        return out

    def kinds(self) -> np.ndarray:
        """0 bond, 1 angle, 2 torsion for each entry of the IC vector, shape (dim,)."""
        return np.array([0, 0, 1] + [0, 1, 2] * len(self.rows), dtype=np.int64)

    def torsion_position(self, quad) -> int | None:
        """Index in the IC vector of the torsion defined by ``quad`` (either direction), or None."""
        q = tuple(int(i) for i in quad)
        for k, (d, c, b, a) in enumerate(self.rows):
            if (a, b, c, d) in (q, q[::-1]):
                return 3 + 3 * k + 2
        return None

    def to_dict(self) -> dict:
        return {"atoms": list(self.atoms), "c2": int(self.c2), "rows": self.rows.tolist(), "proper": self.proper.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ZMatrix":
        return cls(tuple(d["atoms"]), int(d["c2"]), np.asarray(d["rows"], dtype=np.int64).reshape(-1, 4),
                   np.asarray(d["proper"], dtype=bool))


def build_zmatrix(bonds, n_atoms: int, heavy=None, root: int | None = None) -> ZMatrix:
    """Z-matrix of a connected molecule from its bonds (see the module docstring).

    Parameters
    ----------
    bonds : array, shape=(n_bonds, 2), int
    n_atoms : int
    heavy : array of bool, shape=(n_atoms,), optional
        Heavy atoms (placed before hydrogens on the same centre; the root is heavy).
    root : int, optional
        First atom; default: the heavy atom with most heavy neighbours among the chain ends' neighbours
        (the first heavy atom that has at least one heavy neighbour).
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    heavy = np.ones(n_atoms, bool) if heavy is None else np.asarray(heavy, bool)
    nbr = [[] for _ in range(n_atoms)]
    for i, j in bonds:
        nbr[i].append(int(j))
        nbr[j].append(int(i))
    if n_atoms < 4:
        fail("topology", f"has {n_atoms} atoms", "a Z-matrix needs at least 4 atoms")
    if root is None:
        cands = [i for i in range(n_atoms) if heavy[i] and any(heavy[j] for j in nbr[i])]
        if not cands:
            fail("topology", "has no two bonded heavy atoms", "pass bonds (a topology with bonds)")
        root = cands[0]
    # BFS tree
    parent = {root: None}
    queue = [root]
    while queue:
        nxt = []
        for i in queue:
            for j in nbr[i]:
                if j not in parent:
                    parent[j] = i
                    nxt.append(j)
        queue = nxt
    if len(parent) != n_atoms:
        fail("topology", f"is not connected ({n_atoms - len(parent)} atoms unreachable from atom {root})",
             "a flow over internal coordinates needs one molecule whose bonds connect every atom")
    children = {i: [] for i in range(n_atoms)}
    for j, p in parent.items():
        if p is not None:
            children[p].append(j)
    size = {}

    def subtree(i):
        if i not in size:
            size[i] = 1 + sum(subtree(c) for c in children[i])
        return size[i]

    for i in range(n_atoms):
        subtree(i)
    for i in children:
        children[i].sort(key=lambda c: (not heavy[c], -size[c], c))
    # placement order: breadth-first over the sorted tree
    order = [root]
    k = 0
    while k < len(order):
        order.extend(children[order[k]])
        k += 1
    placed_pos = {a: n for n, a in enumerate(order)}
    a0 = root
    if not children[a0]:
        fail("topology", "root has no bonded atom", "pass a molecule with bonds")
    a1 = children[a0][0]
    # a2: a child of a1 if any, else the second child of a0
    if children[a1]:
        a2, c2 = children[a1][0], a1
    elif len(children[a0]) > 1:
        a2, c2 = children[a0][1], a0
    else:
        fail("topology", "is a diatomic chain end", "pass a molecule with at least 3 bonded atoms")
    first = {a0, a1, a2}
    rows, proper = [], []
    # re-order the rest so that every atom comes after its three references
    rest = [a for a in order if a not in first]
    placed = set(first)
    for d in rest:
        c = parent[d]
        if c == a0:
            b = a1 if d != a1 else a2
        else:
            b = parent[c]
        sib = [s for s in children[c] if s != d and s in placed and s != b]
        if sib:
            a, is_proper = sib[0], False
        else:
            if b is not None and parent.get(b) is not None and parent[b] not in (c, d):
                a = parent[b]
            else:  # b is the root (or c's parent is the root): another placed neighbour of b
                opts = [x for x in nbr[b] if x in placed and x not in (c, d)]
                if not opts:
                    opts = [x for x in sorted(placed, key=placed_pos.get) if x not in (b, c, d)]
                a = opts[0]
            is_proper = a in nbr[b]
        rows.append((d, c, b, a))
        proper.append(bool(is_proper))
        placed.add(d)
    return ZMatrix((a0, a1, a2), c2, np.asarray(rows, dtype=np.int64).reshape(-1, 4), np.asarray(proper, dtype=bool))


def _levels(zm: ZMatrix) -> list[np.ndarray]:
    """Row indices grouped so that every row's references are placed by earlier groups."""
    level = {a: 0 for a in zm.atoms}
    groups: dict[int, list[int]] = {}
    for k, (d, c, b, a) in enumerate(zm.rows):
        lv = 1 + max(level[c], level[b], level[a])
        level[int(d)] = lv
        groups.setdefault(lv, []).append(k)
    return [np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)]


def internal_coordinates(zm: ZMatrix, positions: torch.Tensor) -> torch.Tensor:
    """IC vector ``(..., 3 n_atoms - 6)`` of positions ``(..., n_atoms, 3)`` nm (bonds nm, angles and torsions rad)."""
    from latentlab.energies.amber import bond_angles, dihedral_angles

    x = positions.reshape(-1, positions.shape[-2], 3)
    a0, a1, a2 = zm.atoms
    b2 = a0 if zm.c2 == a1 else a1
    r01 = (x[:, a1] - x[:, a0]).norm(dim=-1)
    r2 = (x[:, a2] - x[:, zm.c2]).norm(dim=-1)
    th2 = bond_angles(x, torch.as_tensor([[b2, zm.c2, a2]], device=x.device))[:, 0]
    rows = torch.as_tensor(zm.rows, device=x.device)
    d, c, b, a = rows.unbind(-1)
    r = (x[:, d] - x[:, c]).norm(dim=-1)
    th = bond_angles(x, torch.stack([b, c, d], -1))
    ph = dihedral_angles(x, torch.stack([a, b, c, d], -1))
    body = torch.stack([r, th, ph], dim=-1).flatten(-2)  # (F, 3 (n-3))
    out = torch.cat([torch.stack([r01, r2, th2], -1), body], dim=-1)
    return out.reshape(*positions.shape[:-2], -1)


def _place(a, b, c, r, theta, phi):
    """Natural extension reference frame: the point d with |d - c| = r, angle d-c-b = theta, torsion a-b-c-d = phi."""
    bc = c - b
    bc = bc / bc.norm(dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc, dim=-1)
    st = torch.sin(theta)
    return c + (-r * torch.cos(theta))[..., None] * bc + (r * st * torch.cos(phi))[..., None] * m + \
        (r * st * torch.sin(phi))[..., None] * n


class ZMatrixTransform(torch.distributions.Transform):
    """Internal coordinates ``(..., 3 n_atoms - 6)`` -> reduced frame coordinates (generative direction).

    The frame is the Z-matrix's first three atoms (use ``RigidFrame(n_atoms, zm.atoms)``).
    ``ladj = log r_2 + sum_rows log(r^2 sin theta)``; the inverse reads the ICs of the positions.
    """

    domain = torch.distributions.constraints.independent(torch.distributions.constraints.real, 1)
    codomain = domain
    bijective = True

    def __init__(self, zm: ZMatrix):
        super().__init__()
        self.zm = zm
        self.frame = RigidFrame(zm.n_atoms, zm.atoms)
        self.levels = _levels(zm)
        self._rows = torch.as_tensor(zm.rows)

    def positions(self, ic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical positions ``(..., n_atoms, 3)`` and the log-Jacobian of the ICs -> reduced coordinates."""
        zm = self.zm
        shape = ic.shape[:-1]
        q = ic.reshape(-1, ic.shape[-1])
        nb = q.shape[0]
        a0, a1, a2 = zm.atoms
        x = q.new_zeros(nb, zm.n_atoms, 3)
        x[:, a1, 2] = q[:, 0]
        r2, th2 = q[:, 1], q[:, 2]
        sign = -1.0 if zm.c2 == a1 else 1.0  # direction from c2 to the other frame atom along z
        x[:, a2, 0] = r2 * torch.sin(th2)
        x[:, a2, 2] = x[:, zm.c2, 2] + sign * r2 * torch.cos(th2)
        body = q[:, 3:].reshape(nb, -1, 3)
        for rows in self.levels:
            d, c, b, a = self._rows[rows].to(x.device).unbind(-1)
            rr, tt, pp = body[:, rows].unbind(-1)
            x = x.index_copy(1, d, _place(x[:, a], x[:, b], x[:, c], rr, tt, pp))
        ladj = torch.log(r2) + (2.0 * torch.log(body[..., 0]) + torch.log(torch.sin(body[..., 1]))).sum(-1)
        return x.reshape(*shape, zm.n_atoms, 3), ladj.reshape(shape)

    def call_and_ladj(self, ic):
        x, ladj = self.positions(ic)
        return self.frame.pack(x), ladj

    def _call(self, ic):
        return self.call_and_ladj(ic)[0]

    def _inverse(self, y):
        return internal_coordinates(self.zm, self.frame.positions(y))

    def log_abs_det_jacobian(self, x, y):
        return self.call_and_ladj(x)[1]

    @property
    def inv(self):
        from latentlab.flows.transforms import _Inverse

        return _Inverse(self)


def wrap_angle(phi):
    """Angle(s) into (-pi, pi]."""
    return (phi + math.pi) % (2 * math.pi) - math.pi
