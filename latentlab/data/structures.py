"""Starting structures for the built-in systems.

No alanine-dipeptide PDB ships with OpenMM or mdtraj, so the project builds
ACE-ALA-NME itself: heavy atoms from standard internal coordinates (NeRF
placement, L-chirality of CB), hydrogens added by
``openmm.app.Modeller.addHydrogens`` with the force field, then an energy
minimisation.  The result is committed as
``latentlab/data/structures/alanine-dipeptide.pdb`` (regenerate with
:func:`build_alanine_dipeptide`) and :func:`check_sane_geometry` guards it.

All lengths here are in nm.
"""

from __future__ import annotations

import os

import numpy as np

STRUCTURE_DIR = os.path.join(os.path.dirname(__file__), "structures")
ALANINE_DIPEPTIDE_PDB = os.path.join(STRUCTURE_DIR, "alanine-dipeptide.pdb")


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle_deg: float, dihedral_deg: float) -> np.ndarray:
    """Natural extension reference frame: position of atom d bonded to c.

    ``bond`` = |d - c| (nm), ``angle_deg`` = angle b-c-d, ``dihedral_deg`` = dihedral a-b-c-d.

    References
    ----------
    Parsons et al., J. Comput. Chem. 26, 1063 (2005).
    """
    theta, phi = np.radians(angle_deg), np.radians(dihedral_deg)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(theta), bond * np.sin(theta) * np.cos(phi), bond * np.sin(theta) * np.sin(phi)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def alanine_dipeptide_heavy_atoms(phi: float = -75.0, psi: float = 145.0) -> list[tuple[str, str, int, np.ndarray]]:
    """Heavy atoms of ACE-ALA-NME from standard bond lengths and angles.

    Returns a list of ``(residue name, atom name, residue number, xyz (3,) nm)``.
    Backbone omega = 180 deg; ``phi``/``psi`` in degrees.
    """
    ch3 = np.array([0.0, 0.0, 0.0])
    c0 = np.array([0.152, 0.0, 0.0])
    n1 = _place(np.array([0.0, 0.1, 0.0]), ch3, c0, 0.133, 116.0, 180.0)
    ca = _place(ch3, c0, n1, 0.146, 122.0, 180.0)
    c1 = _place(c0, n1, ca, 0.152, 111.0, phi)
    n2 = _place(n1, ca, c1, 0.133, 116.0, psi)
    cm = _place(ca, c1, n2, 0.146, 122.0, 180.0)

    def carbonyl_o(x, c, n):
        u = (c - x) / np.linalg.norm(c - x) + (c - n) / np.linalg.norm(c - n)
        return c + 0.123 * u / np.linalg.norm(u)

    o0 = carbonyl_o(ch3, c0, n1)
    o1 = carbonyl_o(ca, c1, n2)
    # L-amino-acid CB from the ideal tetrahedral construction (coefficients for
    # unit-free vectors; Dauparas et al., ProteinMPNN, Science 378, 49 (2022)).
    b = ca - n1
    c = c1 - ca
    a = np.cross(b, c) / 0.1  # cross product of two nm vectors, rescaled to nm
    cb = -0.58273431 * a + 0.56802827 * b - 0.54067466 * c + ca
    return [
        ("ACE", "CH3", 1, ch3), ("ACE", "C", 1, c0), ("ACE", "O", 1, o0),
        ("ALA", "N", 2, n1), ("ALA", "CA", 2, ca), ("ALA", "C", 2, c1), ("ALA", "O", 2, o1), ("ALA", "CB", 2, cb),
        ("NME", "N", 3, n2), ("NME", "C", 3, cm),
    ]


def _heavy_atom_pdb_text(atoms) -> str:
    lines = []
    for i, (res, name, resid, xyz) in enumerate(atoms, start=1):
        x, y, z = xyz * 10.0  # nm -> Angstrom (PDB convention)
        element = name[0]
        lines.append(f"ATOM  {i:5d} {name:<4s} {res:3s} A{resid:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}")
    lines.append("TER")
    lines.append("END")
    return "\n".join(lines) + "\n"


def build_alanine_dipeptide(forcefield_files=("amber14-all.xml",), out: str | None = None, minimize: bool = True):
    """Build ACE-ALA-NME with hydrogens; optionally write a PDB.

    Returns ``(topology, positions)`` as OpenMM objects (positions in nm).
    """
    import io

    import openmm
    import openmm.app as app
    import openmm.unit as u

    pdb = app.PDBFile(io.StringIO(_heavy_atom_pdb_text(alanine_dipeptide_heavy_atoms())))
    ff = app.ForceField(*forcefield_files)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(ff)
    positions = modeller.positions
    if minimize:
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
        integrator = openmm.VerletIntegrator(0.001)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 0)
        positions = context.getState(getPositions=True).getPositions()
    check_sane_geometry(modeller.topology, np.asarray(positions.value_in_unit(u.nanometer)))
    if out is not None:
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            app.PDBFile.writeFile(modeller.topology, positions, fh, keepIds=True)
        os.replace(tmp, out)
    return modeller.topology, positions


def check_sane_geometry(topology, xyz: np.ndarray) -> None:
    """Raise ValueError unless all bonds are 0.09-0.17 nm and no non-bonded pair is closer than 0.15 nm.

    ``xyz``: shape (n_atoms, 3), nm.
    """
    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()])
    if len(bonds) == 0:
        raise ValueError("structure: topology has no bonds. Fix: use a PDB with standard residue names")
    lengths = np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=1)
    if lengths.min() < 0.09 or lengths.max() > 0.17:
        raise ValueError(f"structure: bond lengths range {lengths.min():.3f}-{lengths.max():.3f} nm, expected 0.09-0.17 nm. "
                         "Fix: check the input coordinates (units nm) and rebuild")
    n = len(xyz)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    near = np.zeros((n, n), bool)
    near[bonds[:, 0], bonds[:, 1]] = near[bonds[:, 1], bonds[:, 0]] = True
    near = near | (near.astype(int) @ near.astype(int) > 0)  # 1-2 and 1-3 pairs
    np.fill_diagonal(near, True)
    if d[~near].size and d[~near].min() < 0.15:
        raise ValueError(f"structure: two non-bonded atoms are {d[~near].min():.3f} nm apart (< 0.15 nm). Fix: rebuild the structure")
