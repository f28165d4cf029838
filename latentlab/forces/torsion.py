"""Low-noise mean force for dihedral maps: rigid rotation of one side of each bond.

Any ``B(q)`` with ``B J^T = I`` gives an unbiased instantaneous estimator of
``grad_Q A_pmf`` (:mod:`latentlab.forces.mean_force`); they differ only in noise.
For a dihedral ``i-j-k-l`` a natural row of B is the vector field that rotates
every atom on one side of the bond ``j-k`` rigidly about that bond:

    v_a(q) = e x (x_a - x_j)  for the atoms a of the moving side,  0 otherwise,
    e = (x_k - x_j) / |x_k - x_j|.

Rotating a whole side changes this dihedral by exactly the rotation angle
(``grad xi . v = +-1``), and leaves unchanged every other dihedral whose four
atoms all move, or none of which move, or which lie on the axis.  Its
divergence is zero (on each moving atom ``dv_a/dx_a = [e]_x`` is antisymmetric
and the axis atoms do not move), so the estimator is simply

    g_k = grad U . v_k / (grad xi_k . v_k) = -F . v_k / (+-1).

The moving side is a rigid body: the bond-stretch and angle-bend forces inside
it cancel in ``F . v`` (they exert no net torque), which is where almost all of
the noise of the four-atom estimators comes from.  On the built-in alanine
dipeptide set the frame-to-frame standard deviation of g drops from 49 to 24
kJ/mol/rad (phi) and from 55 to 10 kJ/mol/rad (psi) against the mass-weighted B,
with binned means that agree within their standard errors (tested).  Rigid
rotations also keep every bond length, so constraint forces do no work along v.

Needs the topology's bonds; the axis of every dihedral must be a bond that is
not in a ring (a proline phi is not), and the sides must be choosable so that
no dihedral rotates another one (true for backbone phi/psi and side-chain chi
angles of a chain).  Otherwise :func:`rotation_fields` says so and the
mass-weighted estimator is the fallback.

References
----------
den Otter, J. Chem. Phys. 112, 7283 (2000): free-energy derivatives from Cartesian vector fields.
Ciccotti, Kapral, Vanden-Eijnden, ChemPhysChem 6, 1809 (2005): any B with B J^T = I.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

import torch

from latentlab.forces.mean_force import check_frames
from latentlab.maps.internal import DihedralMap
from latentlab.validation import check_positive, fail


@dataclass(frozen=True)
class RotationField:
    """The rigid rotation of ``moving`` (atom indices) about the bond ``axis = (j, k)`` for one dihedral."""

    axis: tuple[int, int]
    moving: tuple[int, ...]


def _bond_graph(topology) -> dict[int, set[int]]:
    graph: dict[int, set[int]] = defaultdict(set)
    for bond in topology.bonds:
        a, b = bond[0].index, bond[1].index
        graph[a].add(b)
        graph[b].add(a)
    return graph


def _side(graph, start: int, blocked: int) -> set[int]:
    """Atoms reachable from ``start`` without passing through ``blocked``."""
    seen, todo = {start}, deque([start])
    while todo:
        a = todo.popleft()
        for b in graph[a]:
            if b != blocked and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _rotates(field: RotationField, quad) -> bool:
    """Whether rotating ``field`` changes the dihedral ``quad`` (its atoms are split between moving and fixed)."""
    moving = set(field.moving)
    fixed = [a for a in quad if a not in moving and a not in field.axis]
    return any(a in moving for a in quad) and bool(fixed)


def rotation_fields(cg_map, topology) -> list[RotationField]:
    """One rigid-rotation field per dihedral of ``cg_map``, chosen so that none changes another dihedral.

    Parameters
    ----------
    cg_map : DihedralMap
    topology : mdtraj.Topology
        With bonds.

    Returns
    -------
    list of RotationField
        In the order of the map's coordinates; the smaller admissible side of each bond moves.
    """
    if not isinstance(cg_map, DihedralMap):
        fail("method", f"the rigid-rotation estimator needs a map made only of dihedrals, not {cg_map.spec or cg_map!r}",
             "use method='mass-weighted'")
    if topology is None or topology.n_bonds == 0:
        fail("method", "the rigid-rotation estimator needs a topology with bonds",
             "load the data with a topology (PDB) or use method='mass-weighted'")
    graph = _bond_graph(topology)
    quads = [tuple(int(a) for a in q) for q in cg_map.quads]
    fields = []
    for n, (i, j, k, l) in enumerate(quads):
        name = cg_map.names[n]
        if k not in graph[j]:
            fail("method", f"the axis {j}-{k} of dihedral {name} is not a bond of the topology",
                 "use method='mass-weighted' for dihedrals about non-bonded pairs")
        side_j, side_k = _side(graph, j, k), _side(graph, k, j)
        if side_j & side_k:
            fail("method", f"the bond {j}-{k} of dihedral {name} is in a ring, so one side cannot rotate rigidly",
                 "use method='mass-weighted' (rings, e.g. a proline phi)")
        others = [q for m, q in enumerate(quads) if m != n]
        options = [RotationField((j, k), tuple(sorted(side_j - {j}))), RotationField((j, k), tuple(sorted(side_k - {k})))]
        options = [f for f in options if not any(_rotates(f, q) for q in others)]
        if not options:
            fail("method", f"every rigid rotation about the bond of dihedral {name} also changes another dihedral "
                           "of the map", "use method='mass-weighted'")
        fields.append(min(options, key=lambda f: len(f.moving)))
    return fields


def torsion_pmf_gradient(cg_map, positions, forces, topology, batch_size: int = 8192,
                         fields: list[RotationField] | None = None) -> torch.Tensor:
    """Instantaneous estimator of ``grad_Q A_pmf`` for a dihedral map from rigid rotations.

    Parameters
    ----------
    cg_map : DihedralMap
    positions : array, shape=(n_frames, n_atoms, 3), nm
    forces : array, shape=(n_frames, n_atoms, 3), kJ/mol/nm
    topology : mdtraj.Topology
        With bonds (see :func:`rotation_fields`).
    batch_size : int
        Frames per chunk.

    Returns
    -------
    torch.Tensor, shape=(n_frames, n_cg)
        kJ/mol/rad; its conditional mean at fixed Q is ``grad_Q A_pmf`` (same as
        :func:`latentlab.forces.local_pmf_gradient`, with less noise).
    """
    x, f = check_frames(positions, forces, cg_map.n_atoms)
    check_positive(batch_size, "batch_size")
    fields = fields if fields is not None else rotation_fields(cg_map, topology)
    out = []
    for s in range(0, x.shape[0], int(batch_size)):
        xb, fb = x[s:s + batch_size], f[s:s + batch_size]
        jac = cg_map.jacobian(xb)  # (F, N, n_atoms, 3); refuses degenerate dihedrals
        cols = []
        for n, field in enumerate(fields):
            j, k = field.axis
            e = xb[:, k] - xb[:, j]
            e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)
            mv = list(field.moving)
            v = torch.cross(e[:, None].expand(-1, len(mv), -1), xb[:, mv] - xb[:, j, None], dim=-1)  # (F, m, 3)
            c = (jac[:, n, mv] * v).sum((1, 2))  # grad xi . v = +-1
            cols.append(-(fb[:, mv] * v).sum((1, 2)) / c)
        out.append(torch.stack(cols, dim=1))
    return torch.cat(out)
