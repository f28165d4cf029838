"""All-atom structures for CG (latent) states: the nearest reference frame in latent space.

A latent state ``Q`` (from a walker of the latent Langevin sampler) has many
all-atom pre-images.  The simplest honest one is the reference frame whose
image ``f(q_i)`` is closest to ``Q``: it is a real, physical structure, and its
distance to ``Q`` says how well the reference data cover the walker's region.
Distances are measured per coordinate in units of the reference spread of
that coordinate (so nm and cosines mix sensibly), with the minimum image for
periodic coordinates (dihedrals).  Structures are superposed (Kabsch, by
mdtraj) onto the first reference frame so that a viewer shows them in one
frame of reference.

The reference may be a different block than the one the map was built on:
chignolin's primary block holds the CA atoms every 0.5 ps, its all-atom block
every atom every 5 ps.  :func:`atom_correspondence` maps the primary atoms to
their all-atom indices (by residue and atom name) so the same map applies.

Units: positions in nm, Q in the map's units.  Nothing here imports a UI.
"""

from __future__ import annotations

import numpy as np
import torch

from latentlab.validation import fail

__all__ = ["NearestFrameReconstructor", "atom_correspondence", "latent_coordinates", "placeholder_topology",
           "pdb_string", "dataset_topology", "atom_labels"]


def latent_coordinates(cg_map, positions, chunk: int = 4096) -> np.ndarray:
    """Apply ``cg_map`` to ``positions`` in chunks.

    Parameters
    ----------
    cg_map : latentlab.maps.CGMap
    positions : np.ndarray, shape=(n_frames, n_atoms, 3), nm

    Returns
    -------
    np.ndarray, shape=(n_frames, n_cg), float64
    """
    return cg_map.map_frames(np.asarray(positions), chunk).numpy()


def atom_correspondence(subset_topology, full_topology) -> np.ndarray:
    """Index in ``full_topology`` of every atom of ``subset_topology``, matched by residue number, name and atom name.

    Residue numbers (``resSeq``) survive ``Topology.subset``; residue indices do not when residues drop out.

    Returns
    -------
    np.ndarray, shape=(subset n_atoms,), int
    """
    lookup = {(a.residue.resSeq, a.residue.name, a.name): a.index for a in full_topology.atoms}
    idx = []
    for atom in subset_topology.atoms:
        key = (atom.residue.resSeq, atom.residue.name, atom.name)
        if key not in lookup:
            fail("topology", f"atom {atom} of the CG block has no match (residue {key[1]}{key[0]}, name {key[2]}) in the "
                             "all-atom block", "use data sets whose blocks come from the same structure")
        idx.append(lookup[key])
    return np.asarray(idx, dtype=int)


def placeholder_topology(n_atoms: int, element: str = "C"):
    """An mdtraj topology of ``n_atoms`` unbonded atoms (one residue each), for systems without one."""
    import mdtraj as md

    top = md.Topology()
    chain = top.add_chain()
    for i in range(int(n_atoms)):
        res = top.add_residue("UNK", chain, resSeq=i + 1)
        top.add_atom(f"{element}{i + 1}", md.element.get_by_symbol(element), res)
    return top


def dataset_topology(dataset):
    """The data set's mdtraj topology, or a placeholder of unbonded carbon atoms when it has none."""
    return dataset.topology if dataset.topology is not None else placeholder_topology(dataset.n_atoms)


def atom_labels(topology, atoms) -> list[str]:
    """``"index: RESNAMEresSeq NAME"`` for each atom index (e.g. ``"8: ALA2 CA"``)."""
    out = []
    for i in atoms:
        a = topology.atom(int(i))
        out.append(f"{int(i)}: {a.residue.name}{a.residue.resSeq} {a.name}")
    return out


def pdb_string(topology, positions) -> str:
    """PDB text of one structure.

    Parameters
    ----------
    topology : mdtraj.Topology
    positions : np.ndarray, shape=(n_atoms, 3), nm
    """
    import tempfile

    import mdtraj as md

    xyz = np.asarray(positions, dtype=np.float32).reshape(1, -1, 3)
    traj = md.Trajectory(xyz, topology)
    with tempfile.NamedTemporaryFile("w+", suffix=".pdb") as handle:
        traj.save_pdb(handle.name)
        handle.seek(0)
        return handle.read()


class NearestFrameReconstructor:
    """All-atom structure for a latent state: the reference frame nearest in latent space, superposed.

    Parameters
    ----------
    cg_map : latentlab.maps.CGMap
        The map ``Q = f(q)`` the walkers live in.
    positions : np.ndarray, shape=(n_frames, n_atoms, 3), nm
        Reference all-atom frames.
    topology : mdtraj.Topology, optional
        Topology of ``positions`` (a placeholder one is made if missing).
    atom_index : np.ndarray, shape=(cg_map.n_atoms,), int, optional
        Where the map's atoms sit in ``positions`` (see :func:`atom_correspondence`);
        default: the same atoms.
    align_atoms : np.ndarray of int, optional
        Atoms used for superposition (default: heavy atoms if a topology is given, else all).
    """

    def __init__(self, cg_map, positions, topology=None, atom_index=None, align_atoms=None):
        x = np.asarray(positions, dtype=np.float32)
        if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] == 0:
            fail("positions", f"has shape {x.shape}", "pass reference frames of shape (n_frames, n_atoms, 3) in nm")
        self.cg_map = cg_map
        self.positions = x
        self.topology = topology if topology is not None else placeholder_topology(x.shape[1])
        if self.topology.n_atoms != x.shape[1]:
            fail("topology", f"has {self.topology.n_atoms} atoms but positions have {x.shape[1]}",
                 "pass the topology of these frames")
        self.atom_index = None if atom_index is None else np.asarray(atom_index, dtype=int)
        mapped = x if self.atom_index is None else x[:, self.atom_index]
        if mapped.shape[1] != cg_map.n_atoms:
            fail("atom_index", f"gives {mapped.shape[1]} atoms but the map reads a system of {cg_map.n_atoms}",
                 "map the CG block's atoms onto the reference block with atom_correspondence")
        self.latent = latent_coordinates(cg_map, mapped)  # (F, N)
        self.periodic = np.asarray(cg_map.periodic, dtype=bool)
        scale = self.latent.std(0)
        self.scale = np.where(scale > 0, scale, 1.0)
        if align_atoms is None:
            heavy = [a.index for a in self.topology.atoms if a.element is not None and a.element.symbol != "H"]
            align_atoms = heavy if len(heavy) >= 3 else np.arange(x.shape[1])
        self.align_atoms = np.asarray(align_atoms, dtype=int)
        self._reference = None
        self._tree = None

    @classmethod
    def from_dataset(cls, dataset, cg_map) -> "NearestFrameReconstructor":
        """Use the data set's all-atom block if it has one (matched to the map's atoms), else the data set itself."""
        if dataset.has_allatom:
            full = dataset.allatom()
            idx = atom_correspondence(dataset.topology, full.topology) if dataset.topology is not None else None
            return cls(cg_map, full.positions, full.topology, atom_index=idx)
        return cls(cg_map, dataset.positions, dataset.topology)

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    def _embed(self, q: np.ndarray) -> np.ndarray:
        """Scaled coordinates; a periodic coordinate becomes (cos, sin) / scale (chord distance ~ angle)."""
        parts = []
        for i in range(q.shape[1]):
            if self.periodic[i]:
                parts += [np.cos(q[:, i]) / self.scale[i], np.sin(q[:, i]) / self.scale[i]]
            else:
                parts.append(q[:, i] / self.scale[i])
        return np.stack(parts, 1)

    def nearest(self, Q) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference frame of each latent state (k-d tree, milliseconds for 1024 walkers).

        Parameters
        ----------
        Q : array, shape=(n_walkers, n_cg) or (n_cg,)

        Returns
        -------
        frames : np.ndarray, shape=(n_walkers,), int
        distances : np.ndarray, shape=(n_walkers,), float
            Latent distance in units of the reference spread of each coordinate
            (chord length for periodic coordinates).
        """
        q = np.atleast_2d(np.asarray(Q.detach().cpu() if isinstance(Q, torch.Tensor) else Q, dtype=np.float64))
        if q.shape[1] != self.latent.shape[1]:
            fail("Q", f"has {q.shape[1]} coordinates but the map has {self.latent.shape[1]}", "pass Q of this map")
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self._embed(self.latent))
        dists, frames = self._tree.query(self._embed(q))
        return np.asarray(frames, dtype=int), np.asarray(dists, dtype=float)

    def superposed(self, frames) -> np.ndarray:
        """Reference frames ``frames`` superposed on frame 0, shape (len(frames), n_atoms, 3), nm."""
        import mdtraj as md

        if self._reference is None:
            self._reference = md.Trajectory(self.positions[:1], self.topology)
        traj = md.Trajectory(self.positions[np.asarray(frames, dtype=int)], self.topology)
        traj.superpose(self._reference, atom_indices=self.align_atoms)
        return traj.xyz

    def reconstruct(self, Q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All-atom structures for latent states.

        Returns
        -------
        positions : np.ndarray, shape=(n_walkers, n_atoms, 3), nm, superposed on reference frame 0
        frames : np.ndarray, shape=(n_walkers,), int
        distances : np.ndarray, shape=(n_walkers,)
        """
        frames, dists = self.nearest(Q)
        return self.superposed(frames), frames, dists

    def pdb(self, frame: int = 0) -> str:
        """PDB text of a reference frame (superposed)."""
        return pdb_string(self.topology, self.superposed([frame])[0])

