"""Constraint forces: which atoms are rigidly bound, and the constraint-free forces on rigid groups.

With bonds to hydrogen constrained (SHAKE/SETTLE-style, as in the built-in chignolin set), the force
saved on a heavy atom contains a constraint part.  Summed over the atom's constraint group (the atom and
the hydrogens bound to it), the constraint forces cancel: they act along the constrained bonds with equal
and opposite parts (Kraemer et al., J. Chem. Theory Comput. 19, 8 (2023), "aggforce").

Arrays are NumPy: forces ``(n_frames, n_atoms, 3)`` kJ/mol/nm, group ids ``(n_atoms,)`` int.
"""

from __future__ import annotations

import numpy as np

from latentlab.validation import fail


def connected_components(n_atoms: int, pairs) -> np.ndarray:
    """Component label of each atom in the graph whose edges are ``pairs``.

    Parameters
    ----------
    n_atoms : int
    pairs : array, shape=(n_pairs, 2), int
        Bonds or constraints (atom indices).

    Returns
    -------
    np.ndarray, shape=(n_atoms,), int
        Two atoms have the same label exactly when a chain of pairs joins them (union-find with path halving).
    """
    parent = list(range(n_atoms))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[ri] = rj
    return np.array([find(i) for i in range(n_atoms)], dtype=np.int64)


def heaviest_of_components(labels: np.ndarray, masses) -> np.ndarray:
    """Group id per atom, shape=(n_atoms,) int: the heaviest atom of its component (the first among equals).

    ``labels`` are component labels, shape=(n_atoms,) (:func:`connected_components`); ``masses`` in amu.
    """
    masses = np.asarray(masses, dtype=np.float64)
    groups = np.arange(len(labels))
    for r in np.unique(labels):
        members = np.nonzero(labels == r)[0]
        groups[members] = members[np.argmax(masses[members])]
    return groups


def constraint_groups(system, masses: np.ndarray) -> np.ndarray:
    """Group id per atom: atoms connected by constraints share the id of the heaviest atom.

    Returns shape (n_atoms,) int.  Unconstrained atoms are their own group.
    """
    n = system.getNumParticles()
    pairs = [system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())]
    return heaviest_of_components(connected_components(n, pairs), masses)


def aggregate_forces(forces: np.ndarray, groups: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Constraint-free forces on ``atoms``: sum of the forces over each atom's constraint group.

    Parameters
    ----------
    forces : np.ndarray, shape (n_frames, n_atoms, 3), kJ/mol/nm
    groups : np.ndarray, shape (n_atoms,), int (see :func:`constraint_groups`)
    atoms : np.ndarray, shape (n_sel,), int — each must be the root (heaviest atom) of its group

    Returns
    -------
    np.ndarray, shape (n_frames, n_sel, 3)

    Notes
    -----
    A constraint force acts along the constrained bond with equal and opposite
    parts on its two atoms, so it cancels in the sum over a rigid group; the
    summed force is the derivative of U along a rigid translation of the group,
    which is a direction the constrained dynamics can move in (Kraemer et al.,
    J. Chem. Theory Comput. 19, 8 (2023)).
    """
    atoms = np.asarray(atoms)
    bad = atoms[groups[atoms] != atoms]
    if bad.size:
        fail("atoms", f"atoms {bad[:5].tolist()} are constrained to a heavier atom (e.g. hydrogens)",
             "select heavy atoms only (their force includes their hydrogens), or generate with --constraints none")
    slot = np.full(len(groups), -1)
    slot[atoms] = np.arange(len(atoms))
    member_slot = slot[groups]  # (n_atoms,)
    keep = member_slot >= 0
    out = np.zeros((forces.shape[0], len(atoms), 3), dtype=np.float64)
    np.add.at(out, (slice(None), member_slot[keep]), forces[:, keep].astype(np.float64))
    return out
