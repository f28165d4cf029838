"""A topology for bare arrays: elements from masses, bonds from covalent radii over the frames.

Published coarse-graining data sets usually ship positions, forces and masses
without a topology.  Dihedral maps then still get the low-noise rigid-rotation
mean force (:mod:`latentlab.forces.torsion`), which needs the bond graph, when
the graph is guessed the way molecular viewers and file converters guess it:

1. each atom's element is the one whose standard atomic mass is nearest to its
   mass (within :data:`MASS_TOLERANCE`; deuterium counts as hydrogen);
2. two atoms are bonded if their median distance over the frames is below the
   sum of their covalent radii plus :data:`BOND_TOLERANCE` (the rule of Open
   Babel's ``ConnectTheDots``, 0.45 Angstrom), hydrogens keep only their nearest
   partner, and metal ions and atoms of no element get no bonds;
3. atoms of a chain of alpha carbons only (a CA trace, bond lengths 0.38 nm
   trans, 0.29 nm cis) are bonded to their sequence neighbours when no covalent
   bond is found at all.

The median over frames makes the guess robust to a stretched frame; a bond
that exists in the graph but breaks in the data is reported by
:func:`infer_bonds` as ``max_stretch``.

:func:`rigid_groups` finds atoms held rigid by constraints (bond length
constant over the frames), the constraint groups of
:class:`latentlab.data.Dataset`.

References
----------
Cordero et al., "Covalent radii revisited", Dalton Trans. 2832 (2008): the radii below.
O'Boyle et al., "Open Babel: An open chemical toolbox", J. Cheminf. 3, 33 (2011): distance rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latentlab.validation import fail

#: Covalent radii in nm (Cordero et al. 2008; carbon sp3, iron low spin).
COVALENT_RADII_NM = {
    "H": 0.031, "B": 0.084, "C": 0.076, "N": 0.071, "O": 0.066, "F": 0.057, "Si": 0.111, "P": 0.107, "S": 0.105,
    "Cl": 0.102, "Se": 0.120, "Br": 0.120, "I": 0.139,
    "Li": 0.128, "Na": 0.166, "Mg": 0.141, "K": 0.203, "Ca": 0.176, "Mn": 0.139, "Fe": 0.132, "Cu": 0.132, "Zn": 0.122,
}

#: Elements that get no covalent bonds (ions in biomolecular simulations).
IONS = frozenset({"Li", "Na", "Mg", "K", "Ca", "Mn", "Fe", "Cu", "Zn"})

#: Distance tolerance of the bond rule, nm (Open Babel: 0.45 Angstrom).
BOND_TOLERANCE = 0.045

#: Shortest distance that can be a bond, nm (closer atoms are overlapping, not bonded).
MIN_BOND = 0.04

#: Largest |mass - element mass| accepted for an element, amu.
MASS_TOLERANCE = 0.6

#: CA-CA distance range of a CA trace, nm (0.38 nm trans, 0.29 nm cis peptide).
CA_TRACE_RANGE = (0.27, 0.42)


def element_from_mass(mass: float) -> str | None:
    """Symbol of the element (of :data:`COVALENT_RADII_NM`) whose standard mass is nearest to ``mass`` amu.

    None when no element is within :data:`MASS_TOLERANCE`; 1.5-2.6 amu (deuterium) is hydrogen.
    Standard atomic masses are mdtraj's (IUPAC).
    """
    import mdtraj as md

    m = float(mass)
    if 1.5 <= m <= 2.6:
        return "H"
    best, err = None, np.inf
    for symbol in COVALENT_RADII_NM:
        d = abs(md.element.get_by_symbol(symbol).mass - m)
        if d < err:
            best, err = symbol, d
    return best if err <= MASS_TOLERANCE else None


def _sample(positions: np.ndarray, n: int) -> np.ndarray:
    idx = np.unique(np.linspace(0, len(positions) - 1, min(n, len(positions))).astype(int))
    return np.asarray(positions[idx], dtype=np.float64)


def _candidate_pairs(x: np.ndarray, cutoff: float) -> np.ndarray:
    """Pairs (i < j) closer than ``cutoff`` in any of the frames ``x`` (n_frames, n_atoms, 3)."""
    from scipy.spatial import cKDTree

    found = set()
    for frame in x[: min(len(x), 5)]:
        found.update(cKDTree(frame).query_pairs(cutoff))
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)


@dataclass
class BondGuess:
    """Outcome of :func:`infer_bonds`.

    Attributes
    ----------
    elements : list of str or None, one per atom
    bonds : np.ndarray, shape=(n_bonds, 2), int
        Atom pairs (i < j), sorted.
    rule : str
        ``"covalent"``, ``"ca-trace"`` or ``"none"``.
    unknown_masses : list of float
        Masses (amu) that matched no element.
    max_stretch : float
        Largest (max over frames / median) length ratio of a bond (near 1 for real bonds).
    """

    elements: list
    bonds: np.ndarray
    rule: str
    unknown_masses: list = field(default_factory=list)
    max_stretch: float = 1.0

    def summary(self) -> str:
        text = f"{len(self.bonds)} bonds ({self.rule} rule)"
        if self.unknown_masses:
            shown = ", ".join(f"{m:g}" for m in sorted(set(self.unknown_masses))[:5])
            text += (f"; {len(self.unknown_masses)} atoms with masses of no element ({shown} amu) got no bonds "
                     "(physical masses, not repartitioned ones, give the elements)")
        return text


def infer_bonds(positions, masses, n_frames: int = 50) -> BondGuess:
    """Guess elements and bonds of a molecular system from its frames and masses.

    Parameters
    ----------
    positions : array, shape=(n_frames, n_atoms, 3), nm
    masses : array, shape=(n_atoms,), amu
        Physical masses (hydrogen mass repartitioning hides the elements).
    n_frames : int
        Frames (evenly spaced) whose median distances decide.

    Returns
    -------
    BondGuess
    """
    x = _sample(np.asarray(positions), n_frames)  # (S, N, 3)
    m = np.asarray(masses, dtype=np.float64).reshape(-1)
    if x.ndim != 3 or x.shape[1] != m.shape[0]:
        fail("masses", f"has {m.shape[0]} entries but positions have shape {np.shape(positions)}", "pass one mass per atom")
    elements = [element_from_mass(v) for v in m]
    unknown = [float(v) for v, e in zip(m, elements) if e is None]
    # atoms of no element (coarse-grained beads, repartitioned hydrogen masses) and ions get no covalent bonds;
    # a missing bond only makes the rigid-rotation estimator noisier, a wrong one could join two sides
    radius = np.array([COVALENT_RADII_NM[e] if e is not None and e not in IONS else 0.0 for e in elements])
    n_atoms = len(m)
    bonds = np.zeros((0, 2), dtype=np.int64)
    rule = "none"
    if n_atoms >= 2:
        cutoff = 2 * radius.max() + BOND_TOLERANCE
        pairs = _candidate_pairs(x, cutoff) if radius.max() > 0 else np.zeros((0, 2), dtype=np.int64)
        if len(pairs):
            d = np.median(np.linalg.norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], axis=-1), axis=0)  # (P,)
            ei, ej = [elements[i] for i in pairs[:, 0]], [elements[j] for j in pairs[:, 1]]
            ok = (d > MIN_BOND) & (d < radius[pairs[:, 0]] + radius[pairs[:, 1]] + BOND_TOLERANCE)
            ok &= (radius[pairs[:, 0]] > 0) & (radius[pairs[:, 1]] > 0)
            ok &= np.array([not (a in IONS or b in IONS or (a == "H" and b == "H")) for a, b in zip(ei, ej)], dtype=bool)
            pairs, d = pairs[ok], d[ok]
            # a hydrogen keeps only its nearest partner (H-H pairs are gone, so each pair has at most one H)
            is_h = np.array([e == "H" for e in elements], dtype=bool)
            h_of = np.where(is_h[pairs[:, 0]], pairs[:, 0], np.where(is_h[pairs[:, 1]], pairs[:, 1], -1))  # (P,)
            keep = h_of < 0
            with_h = np.nonzero(h_of >= 0)[0]
            order = with_h[np.lexsort((d[with_h], h_of[with_h]))]  # by hydrogen, then distance
            first = np.r_[True, h_of[order][1:] != h_of[order][:-1]] if len(order) else np.zeros(0, dtype=bool)
            keep[order[first]] = True
            bonds = pairs[keep]
            rule = "covalent" if len(bonds) else "none"
        if not len(bonds) and all(e in ("C", None) for e in elements):
            consecutive = np.stack([np.arange(n_atoms - 1), np.arange(1, n_atoms)], axis=1)
            d = np.median(np.linalg.norm(x[:, :-1] - x[:, 1:], axis=-1), axis=0)
            lo, hi = CA_TRACE_RANGE
            if ((d > lo) & (d < hi)).all():
                bonds, rule = consecutive, "ca-trace"
    stretch = 1.0
    if len(bonds):
        dist = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)  # (S, B)
        stretch = float((dist.max(axis=0) / np.median(dist, axis=0)).max())
    order = np.lexsort((bonds[:, 1], bonds[:, 0])) if len(bonds) else np.zeros(0, dtype=int)
    return BondGuess(elements=elements, bonds=bonds[order], rule=rule, unknown_masses=unknown, max_stretch=stretch)


def topology_from_bonds(elements, bonds, names=None):
    """An mdtraj Topology in atom order: residues ``UNK`` = runs of consecutive atoms of one molecule.

    Atoms are named element + number (``C1``, ``N2``, ...; ``X`` for no element).

    Parameters
    ----------
    elements : list of str or None, one per atom
    bonds : array, shape=(n_bonds, 2), int
    names : list of str, optional
        Atom names (default ``C1``, ``N2``, ...; the element alone past 4 characters).
    """
    import mdtraj as md

    from latentlab.forces.constraints import connected_components

    molecule = connected_components(len(elements), np.asarray(bonds, dtype=np.int64).reshape(-1, 2))
    top = md.Topology()
    chain = top.add_chain()
    atoms = []
    residue = None
    for i, symbol in enumerate(elements):
        if i == 0 or molecule[i] != molecule[i - 1]:  # residues stay contiguous, so files list atoms in this order
            residue = top.add_residue("UNK", chain)
        element = md.element.get_by_symbol(symbol) if symbol else md.element.virtual
        label = names[i] if names is not None else f"{symbol or 'X'}{i + 1}"
        if len(label) > 4:
            label = symbol or "X"
        atoms.append(top.add_atom(label, element, residue))
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        top.add_bond(atoms[int(i)], atoms[int(j)])
    return top


def guess_topology(positions, masses, n_frames: int = 50):
    """:func:`infer_bonds` then :func:`topology_from_bonds`: ``(topology, BondGuess)``."""
    guess = infer_bonds(positions, masses, n_frames)
    return topology_from_bonds(guess.elements, guess.bonds), guess


def rigid_groups(positions, bonds, masses, rel_tol: float = 1e-4, n_frames: int = 200) -> np.ndarray | None:
    """Constraint groups from bonds whose length does not change over the frames.

    A bond is rigid when the standard deviation of its length over the frames
    is below ``rel_tol`` times its mean (OpenMM constrains to a relative 1e-5;
    a free X-H bond fluctuates by ~3 % at 300 K).  Atoms joined by rigid bonds
    form a group whose id is the index of its heaviest atom.

    Parameters
    ----------
    positions : array, shape=(n_frames, n_atoms, 3), nm
    bonds : array, shape=(n_bonds, 2), int
    masses : array, shape=(n_atoms,), amu
    rel_tol : float
    n_frames : int
        Frames (evenly spaced) to look at.

    Returns
    -------
    np.ndarray, shape=(n_atoms,), int, or None
        None when no bond is rigid (or there are fewer than 3 frames).
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    if len(bonds) == 0 or len(positions) < 3:
        return None
    x = _sample(np.asarray(positions), n_frames)
    d = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)  # (S, B)
    rigid = bonds[d.std(axis=0) < rel_tol * d.mean(axis=0)]
    if len(rigid) == 0:
        return None
    from latentlab.forces.constraints import connected_components, heaviest_of_components

    return heaviest_of_components(connected_components(len(masses), rigid), masses)


__all__ = ["BondGuess", "infer_bonds", "topology_from_bonds", "guess_topology", "rigid_groups", "element_from_mass",
           "COVALENT_RADII_NM"]
