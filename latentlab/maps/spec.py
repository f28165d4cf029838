"""Map spec strings: the names users type for CG maps.

Grammar (``SEL`` is an mdtraj selection such as ``name CA and resid 0 5 9``,
or comma-separated 0-based atom indices such as ``4,6,8``, taken in order)::

    triangle:SEL               (r1, r2, cos) of Bruce et al.; SEL gives a, b (vertex), c
    distances:SEL              all pair distances among SEL
    distances:0-5,5-9          the listed pairs
    angles:i-j-k,...           bond angles (vertex j)
    dihedrals:i-j-k-l,...      dihedrals
    dihedrals:phi-psi          backbone phi and psi of every residue that has them
                               (also dihedrals:phi, dihedrals:psi); needs a topology
    linear:SEL                 Cartesian positions of SEL
    com:SEL;SEL;...            one centre-of-mass bead per SEL (needs masses)
    pca:SEL:K                  first K principal components of SEL's positions
                               (centroid removed; needs positions to fit)
    flow:PATH                  the slow latent z of a trained flow (a file of latentlab flow train)
"""

from __future__ import annotations

import re

import numpy as np

from latentlab.maps.base import CGMap
from latentlab.maps.internal import AngleMap, DihedralMap, DistanceMap, TriangleMap
from latentlab.maps.learned import PCAMap
from latentlab.maps.linear import LinearMap
from latentlab.validation import check_atom_indices, fail

KINDS = ("triangle", "distances", "angles", "dihedrals", "linear", "com", "pca", "flow")

_INDICES = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*$")


def _tuples(text: str, size: int, kind: str) -> list[tuple[int, ...]] | None:
    """Parse ``i-j,k-l`` style lists; None if ``text`` is not of that form."""
    pattern = r"\d+" + r"\s*-\s*\d+" * (size - 1)
    if not re.fullmatch(rf"\s*{pattern}(\s*,\s*{pattern})*\s*", text):
        return None
    return [tuple(int(v) for v in item.split("-")) for item in text.replace(" ", "").split(",")]


def select_atoms(selection: str, topology=None, n_atoms: int | None = None, argument: str = "selection") -> list[int]:
    """Resolve ``selection`` (mdtraj selection or ``"i,j,k"`` indices) to 0-based atom indices.

    Index lists keep their order; mdtraj selections come back in topology order.
    """
    selection = selection.strip()
    if not selection:
        fail(argument, "is empty", "give an mdtraj selection (e.g. 'name CA') or indices such as '0,4,8'")
    if _INDICES.match(selection):
        idx = [int(v) for v in selection.split(",")]
        return check_atom_indices(idx, n_atoms if n_atoms is not None else (topology.n_atoms if topology is not None else None), argument)
    if topology is None:
        fail(argument, f"'{selection}' is an atom selection but this data set has no topology",
             "use comma-separated 0-based atom indices such as '0,1,2', or load the data with a topology")
    try:
        idx = topology.select(selection)
    except Exception as err:  # mdtraj raises several exception types for bad syntax
        fail(argument, f"mdtraj cannot parse '{selection}' ({err})",
             "see mdtraj's selection language, e.g. 'name CA and resid 0 to 9'")
    if len(idx) == 0:
        fail(argument, f"'{selection}' selects no atoms", "check atom and residue names (mdtraj resid is 0-based)")
    return [int(i) for i in idx]


def backbone_dihedrals(topology, which: str = "phi-psi") -> tuple[list[tuple[int, int, int, int]], list[str]]:
    """Atom quadruples and names of backbone phi/psi dihedrals from an mdtraj topology."""
    import mdtraj as md

    wanted = which.split("-")
    for w in wanted:
        if w not in ("phi", "psi"):
            fail("spec", f"unknown backbone dihedral '{w}'", "use dihedrals:phi-psi, dihedrals:phi or dihedrals:psi")
    traj = md.Trajectory(np.zeros((1, topology.n_atoms, 3)), topology)
    quads, names = [], []
    for w in wanted:
        with np.errstate(all="ignore"):
            idx, _ = (md.compute_phi if w == "phi" else md.compute_psi)(traj)
        for n, q in enumerate(idx):
            quads.append(tuple(int(a) for a in q))
            names.append(w if len(idx) == 1 else f"{w}{n + 1}")
    if not quads:
        fail("spec", f"the topology has no backbone {which} dihedrals (is it a peptide with N, CA, C atoms?)",
             "give the dihedral atoms explicitly, e.g. dihedrals:4-6-8-14")
    return quads, names


def parse_map(spec: str, topology=None, n_atoms: int | None = None, masses=None, positions=None) -> CGMap:
    """Build a CG map from its spec string (see the module docstring for the grammar).

    Parameters
    ----------
    spec : str
    topology : mdtraj.Topology, optional
        Needed for mdtraj selections and ``dihedrals:phi-psi``.
    n_atoms : int, optional
        Size of the system (defaults to ``topology.n_atoms``); indices are checked against it.
    masses : array, shape=(n_atoms,), amu, optional
        Needed for ``com:``.
    positions : array, shape=(n_frames, n_atoms, 3), nm, optional
        Needed to fit ``pca:``.
    """
    if not isinstance(spec, str) or ":" not in spec:
        fail("spec", f"got {spec!r}", f"write KIND:ARGS with KIND one of {', '.join(KINDS)} (e.g. 'triangle:0,1,2')")
    kind, _, args = spec.partition(":")
    kind = kind.strip().lower()
    if n_atoms is None and topology is not None:
        n_atoms = topology.n_atoms

    def sel(text, argument="spec"):
        return select_atoms(text, topology, n_atoms, argument)

    if kind == "triangle":
        atoms = sel(args)
        if len(atoms) != 3:
            fail("spec", f"triangle needs exactly 3 atoms (a, vertex b, c) but '{args}' selects {len(atoms)}",
                 "select three atoms, e.g. triangle:name CA and resid 0 5 9")
        return TriangleMap(*atoms, n_atoms=n_atoms, spec=spec)
    if kind == "distances":
        pairs = _tuples(args, 2, kind)
        if pairs is not None:
            check_atom_indices([a for p in pairs for a in p], n_atoms, "spec")
            return DistanceMap(pairs, n_atoms=n_atoms, spec=spec)
        return DistanceMap.all_pairs(sel(args), n_atoms=n_atoms, spec=spec)
    if kind == "angles":
        triples = _tuples(args, 3, kind)
        if triples is None:
            fail("spec", f"angles needs i-j-k triples, got '{args}'", "write e.g. angles:0-1-2,1-2-3")
        check_atom_indices([a for t in triples for a in t], n_atoms, "spec")
        return AngleMap(triples, n_atoms=n_atoms, spec=spec)
    if kind == "dihedrals":
        text = args.strip().lower()
        if re.fullmatch(r"(phi|psi)(-(phi|psi))?", text):
            if topology is None:
                fail("spec", f"dihedrals:{text} needs a topology to find the backbone atoms",
                     "load the data with a topology, or give the atoms: dihedrals:i-j-k-l,...")
            quads, names = backbone_dihedrals(topology, text)
            return DihedralMap(quads, n_atoms=n_atoms, names=names, spec=spec)
        quads = _tuples(args, 4, kind)
        if quads is None:
            fail("spec", f"dihedrals needs i-j-k-l quadruples or phi-psi, got '{args}'",
                 "write e.g. dihedrals:4-6-8-14 or dihedrals:phi-psi")
        check_atom_indices([a for q in quads for a in q], n_atoms, "spec")
        return DihedralMap(quads, n_atoms=n_atoms, spec=spec)
    if kind == "linear":
        return LinearMap.from_slice(sel(args), n_atoms=n_atoms, spec=spec)
    if kind == "com":
        if masses is None:
            fail("masses", "are needed for centre-of-mass beads", "load the data with masses or a topology")
        groups = [sel(part) for part in args.split(";") if part.strip()]
        if not groups:
            fail("spec", "com: lists no beads", "write com:SEL;SEL;... with one selection per bead")
        return LinearMap.from_centers_of_mass(groups, masses, n_atoms=n_atoms, spec=spec)
    if kind == "pca":
        text, _, k = args.rpartition(":")
        if not text or not k.strip().isdigit():
            fail("spec", f"pca needs SEL:K, got '{args}'", "write e.g. pca:name CA:2")
        if positions is None:
            fail("positions", "are needed to fit a PCA map", "pass the data set's positions (or use a data set)")
        return PCAMap.fit(positions, sel(text), int(k), n_atoms=n_atoms, spec=spec)
    if kind == "flow":
        return _flow_map(args.strip(), n_atoms, spec)
    fail("spec", f"unknown map kind '{kind}'", f"use one of {', '.join(KINDS)}")


def _flow_map(path: str, n_atoms: int | None, spec: str) -> CGMap:
    """``flow:PATH``: the slow latent of the flow in the file PATH, checked against the data set's atoms."""
    import os

    from latentlab.flows.reconstruct import flow_slow_map

    if not path:
        fail("spec", "flow: names no file", "write flow:PATH with the file of latentlab flow train")
    if not os.path.exists(path):
        raise FileNotFoundError(f"spec: the flow file {path} does not exist. Fix: check the path of flow:PATH")
    path = os.path.abspath(path)
    cg_map = flow_slow_map(path, spec=spec)
    if n_atoms is not None and cg_map.n_atoms != n_atoms:
        fail("spec", f"the flow {path} is for {cg_map.n_atoms} atoms but the data set has {n_atoms}",
             "use data of the system the flow was trained for (e.g. latentlab flow sample)")
    return cg_map


def spec_for_atoms(kind: str, atoms) -> str:
    """A map spec of ``kind`` on atoms picked in order (e.g. by clicking): consecutive triples for angles,
    consecutive quadruples for dihedrals, one bead for ``com``, two components for ``pca``."""
    if kind not in KINDS or kind == "flow":
        fail("kind", f"no map of kind {kind!r} is made from picked atoms", f"use one of {', '.join(KINDS[:-1])}")
    ids = [str(int(a)) for a in atoms]
    if not ids:
        fail("atoms", "no atoms were picked", "pick atoms first (click them or type a selection)")
    if kind == "angles":
        return "angles:" + ",".join("-".join(ids[i:i + 3]) for i in range(len(ids) - 2))
    if kind == "dihedrals":
        return "dihedrals:" + ",".join("-".join(ids[i:i + 4]) for i in range(len(ids) - 3))
    if kind == "pca":
        return "pca:" + ",".join(ids) + ":2"
    return f"{kind}:" + ",".join(ids)


def suggested_map(topology=None, n_atoms: int | None = None) -> str:
    """A first map for a system that names none (a spec string, at most 3 coordinates).

    * a single residue's backbone ``phi, psi`` (a dipeptide): ``dihedrals:phi-psi``;
    * a chain of at least 3 residues with CA atoms: the triangle of the first, middle and last CA
      (the ``(r1, r2, cos)`` map of Bruce et al. for chignolin);
    * otherwise the first atoms: a triangle of three, a distance of two, the x of one.
    """
    if topology is not None:
        try:
            quads, _ = backbone_dihedrals(topology)
        except ValueError:
            quads = []
        if len(quads) == 2:
            return "dihedrals:phi-psi"
        residues = sorted({topology.atom(int(i)).residue.index for i in topology.select("name CA")})
        if len(residues) >= 3:
            ends = (residues[0], residues[len(residues) // 2], residues[-1])
            return "triangle:name CA and (resid " + " ".join(str(r) for r in ends) + ")"
        n_atoms = topology.n_atoms
    n = int(n_atoms or 0)
    return "triangle:0,1,2" if n >= 3 else "distances:0-1" if n == 2 else "linear:0"


def map_from_dict(d: dict) -> CGMap:
    """Rebuild a map from :meth:`CGMap.to_dict` (as stored in model files)."""
    import torch

    if not isinstance(d, dict) or "kind" not in d:
        fail("map", "is not a stored CG map", "re-train the model with this latentlab")
    kind, n_atoms, spec = d["kind"], d.get("n_atoms"), d.get("spec")
    if kind == "triangle":
        return TriangleMap(*d["atoms"], n_atoms=n_atoms, spec=spec)
    if kind == "distances":
        return DistanceMap(d["pairs"], n_atoms=n_atoms, spec=spec)
    if kind == "angles":
        return AngleMap(d["triples"], n_atoms=n_atoms, spec=spec)
    if kind == "dihedrals":
        return DihedralMap(d["quads"], n_atoms=n_atoms, names=d.get("names"), spec=spec)
    if kind == "linear-matrix":
        return LinearMap(d["matrix"], d["atoms"], n_atoms=n_atoms, bead_names=d.get("bead_names"), spec=spec)
    if kind == "flow":
        return _flow_map(d["path"], n_atoms, spec)
    if kind == "pca":
        ev = d.get("explained_variance")
        return PCAMap(d["atoms"], torch.as_tensor(d["mean"]), torch.as_tensor(d["components"]), center=d.get("center", True),
                      n_atoms=n_atoms, explained_variance=ev, spec=spec)
    fail("map", f"unknown stored map kind {kind!r}", "use a model file written by this latentlab")
