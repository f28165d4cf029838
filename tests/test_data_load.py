"""Loaders: units, validation of every bad input, round trips through the HDF5 format."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from latentlab.data import Dataset, load, resolve
from latentlab.data.dataset import typical_neighbour_distance


def _molecule(n_frames=50, seed=0):
    """A fake 4-atom chain with 0.15 nm bonds in nm, plus forces and energies."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.2, 0.14, 0.0], [0.35, 0.14, 0.02]])
    x = base + 0.005 * rng.normal(size=(n_frames, 4, 3))
    f = rng.normal(size=(n_frames, 4, 3)) * 100.0
    e = rng.normal(size=n_frames)
    return x, f, e


MASSES = [12.011, 12.011, 14.007, 15.999]


def test_from_arrays_keeps_nm_and_kj():
    x, f, e = _molecule()
    ds = Dataset.from_arrays(x, f, masses=MASSES, temperature=300, energies=e)
    np.testing.assert_allclose(ds.positions, x, rtol=1e-6)
    np.testing.assert_allclose(ds.forces, f, rtol=1e-6)
    np.testing.assert_allclose(ds.energies, e)
    assert ds.kT == pytest.approx(0.008314462618 * 300)


def test_from_arrays_converts_angstrom_and_kcal():
    x, f, e = _molecule()
    ds = Dataset.from_arrays(10 * x, f, masses=MASSES, temperature=300, energies=e, length_unit="angstrom",
                             energy_unit="kcal/mol")
    np.testing.assert_allclose(ds.positions, x, rtol=1e-6)
    np.testing.assert_allclose(ds.forces, f * 41.84, rtol=1e-6)  # kcal/mol/A -> kJ/mol/nm
    np.testing.assert_allclose(ds.energies, e * 4.184)


def test_refuses_angstrom_positions_declared_nm():
    x, f, _ = _molecule()
    with pytest.raises(ValueError, match="look like Angstrom.*--length-unit angstrom"):
        Dataset.from_arrays(10 * x, f, masses=MASSES, temperature=300)


def test_refuses_nm_positions_declared_angstrom():
    x, f, _ = _molecule()
    with pytest.raises(ValueError, match="look like nm.*--length-unit nm"):
        Dataset.from_arrays(x, f, masses=MASSES, temperature=300, length_unit="angstrom")


def test_neighbour_distance_uses_topology_bonds(tmp_path):
    ds = load("three-atom", n=20)
    assert 0.3 < typical_neighbour_distance(ds.positions) < 0.5


@pytest.mark.parametrize("bad, match", [
    (dict(positions=np.zeros((4, 3))), "single frame"),
    (dict(positions=np.zeros((5, 4, 2))), r"expected \(n_frames, n_atoms, 3\)"),
    (dict(forces=np.zeros((49, 4, 3))), "49 frames but positions has 50"),
    (dict(forces=np.zeros((50, 3, 3))), "3 atoms but positions have 4"),
    (dict(masses=[12.0, 12.0, 12.0]), "3 entries but the system has 4 atoms"),
    (dict(masses=[12.0, 12.0, -1.0, 12.0]), "non-positive"),
    (dict(masses=None), "masses.*required"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-5.0), "temperature"),
    (dict(temperature=None), "temperature.*required"),
    (dict(energies=np.zeros(7)), "energies"),
    (dict(length_unit="furlong"), "length_unit"),
    (dict(energy_unit="eV"), "energy_unit"),
])
def test_from_arrays_rejects_bad_input_with_a_fix(bad, match):
    x, f, e = _molecule()
    kwargs = dict(positions=x, forces=f, masses=MASSES, temperature=300.0, energies=e)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match) as err:
        Dataset.from_arrays(**kwargs)
    assert "Fix:" in str(err.value)


def test_nan_frames_are_named_or_dropped_on_request():
    x, f, e = _molecule()
    x[7, 1, 0] = np.nan
    f[12, 0, 2] = np.inf
    with pytest.raises(ValueError, match=r"2 frame\(s\).*frame indices 7, 12.*drop_nonfinite"):
        Dataset.from_arrays(x, f, masses=MASSES, temperature=300)
    ds = Dataset.from_arrays(x, f, masses=MASSES, temperature=300, energies=e, drop_nonfinite=True)
    assert ds.n_frames == 48
    assert np.isfinite(ds.positions).all() and np.isfinite(ds.forces).all()
    np.testing.assert_allclose(ds.energies, np.delete(e, [7, 12]))


def test_h5_round_trip_and_atomic_save(tmp_path):
    x, f, e = _molecule()
    ds = Dataset.from_arrays(x, f, masses=MASSES, temperature=310, energies=e, name="toy", default_map="distances:0-3")
    path = str(tmp_path / "toy.h5")
    ds.save(path)
    back = load(path)
    np.testing.assert_array_equal(back.positions, ds.positions)
    np.testing.assert_array_equal(back.forces, ds.forces)
    assert (back.temperature, back.name, back.default_map) == (310, "toy", "distances:0-3")
    assert os.listdir(tmp_path) == ["toy.h5"]


def test_missing_file_names_the_builtins():
    with pytest.raises(FileNotFoundError, match="alanine-dipeptide"):
        load("/no/such/file.h5")
    with pytest.raises(FileNotFoundError, match="neither a file nor a built-in"):
        resolve("alanine-dipeptid")


def test_files_of_the_wrong_kind_are_named_by_their_content(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5 is a text file, not a data set. Fix: pass a built-in name"):
        load(str(junk))
    npy = tmp_path / "junk.npy"
    npy.write_text("not numpy")
    with pytest.raises(ValueError, match="junk.npy is a text file"):
        load(str(npy), temperature=300, masses=MASSES)
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(ValueError, match="could not be read as .npy"):
        load(str(broken), temperature=300, masses=MASSES)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="an HDF5 file that is not a latentlab data set"):
        load(str(other))
    with pytest.raises(ValueError, match="not a latentlab data set"):
        Dataset.from_h5(str(other))
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)"):
        load(str(tmp_path / "empty.h5"))
    good = tmp_path / "good.h5"
    x, f, _ = _molecule()
    Dataset.from_arrays(x, f, masses=MASSES, temperature=300).save(str(good))
    (tmp_path / "cut.h5").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="damaged or truncated HDF5"):
        load(str(tmp_path / "cut.h5"))
    with pytest.raises(ValueError, match="is a directory"):
        load(str(tmp_path))
    (tmp_path / "frc.npy").write_text("1 2 3")
    np.save(tmp_path / "pos.npy", x)
    with pytest.raises(ValueError, match="forces: .*frc.npy is a text file, not a NumPy .npy/.npz array"):
        load(str(tmp_path / "pos.npy"), forces=str(tmp_path / "frc.npy"), masses=MASSES, temperature=300)


def test_data_set_without_extension_is_read_by_content(tmp_path):
    x, f, _ = _molecule()
    Dataset.from_arrays(x, f, masses=MASSES, temperature=300, name="noext").save(str(tmp_path / "noext"))
    assert load(str(tmp_path / "noext")).name == "noext"


def test_npy_positions_with_forces_file(tmp_path):
    x, f, _ = _molecule()
    np.save(tmp_path / "pos.npy", 10 * x)
    np.savez(tmp_path / "frc.npz", forces=f)
    ds = load(str(tmp_path / "pos.npy"), forces=str(tmp_path / "frc.npz"), masses=MASSES, temperature=300,
              length_unit="angstrom", energy_unit="kcal/mol")
    np.testing.assert_allclose(ds.forces, 41.84 * f, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="forces"):
        load(str(tmp_path / "pos.npy"), forces=str(tmp_path / "nope.npy"), masses=MASSES, temperature=300,
             length_unit="angstrom")


def test_trajectory_with_topology_and_forces(tmp_path):
    import mdtraj as md

    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    top = md.load(ALANINE_DIPEPTIDE_PDB)
    rng = np.random.default_rng(1)
    xyz = top.xyz + 0.002 * rng.normal(size=(10, 22, 3)).astype(np.float32)
    traj = md.Trajectory(xyz, top.topology)
    traj.save_dcd(str(tmp_path / "t.dcd"))
    f = rng.normal(size=(10, 22, 3))
    np.save(tmp_path / "f.npy", f)
    ds = load(str(tmp_path / "t.dcd"), topology=ALANINE_DIPEPTIDE_PDB, forces=str(tmp_path / "f.npy"), temperature=300,
              energy_unit="kcal/mol", length_unit="angstrom")
    np.testing.assert_allclose(ds.positions, xyz, atol=1e-5)
    np.testing.assert_allclose(ds.forces, 41.84 * f, rtol=1e-5)
    assert ds.masses[0] == pytest.approx(12.01, abs=0.01)
    with pytest.raises(ValueError, match="temperature"):
        load(str(tmp_path / "t.dcd"), topology=ALANINE_DIPEPTIDE_PDB)
    with pytest.raises(ValueError, match="frames but positions"):
        np.save(tmp_path / "f9.npy", f[:9])
        load(str(tmp_path / "t.dcd"), topology=ALANINE_DIPEPTIDE_PDB, forces=str(tmp_path / "f9.npy"), temperature=300)


def test_cg_forces_sum_constraint_groups():
    x, f, _ = _molecule()
    ds = Dataset.from_arrays(x, f, masses=MASSES, temperature=300, constraint_group=[0, 0, 2, 3])
    np.testing.assert_allclose(ds.cg_forces([0, 2]), np.stack([f[:, 0] + f[:, 1], f[:, 2]], 1), rtol=1e-5)
    cff = ds.constraint_free_forces()
    np.testing.assert_allclose(cff[:, 1], 0.0)
    np.testing.assert_allclose(cff[:, 0], f[:, 0] + f[:, 1], rtol=1e-5)


def test_analytic_sources_load_as_datasets():
    for name, atoms in (("three-atom", 3), ("double-well", 1), ("gaussian-mixture", 1)):
        ds = load(name, n=100, seed=3)
        assert (ds.n_frames, ds.n_atoms, ds.has_forces, ds.has_energies) == (100, atoms, True, True)
        assert ds.default_map


# ---------------------------------------------------------------------- file kinds (sniff)


def test_file_kind_reads_the_content_not_the_extension(tmp_path):
    import zipfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentlab.data.sniff import file_kind

    x, f, _ = _molecule()
    Dataset.from_arrays(x, f, masses=MASSES, temperature=300).save(str(tmp_path / "data.bin"))
    with h5py.File(tmp_path / "other.pt", "w") as fh:
        fh["x"] = np.zeros(3)
    with open(tmp_path / "a.h5", "wb") as fh:
        np.save(fh, np.zeros(3))
    with open(tmp_path / "z.h5", "wb") as fh:
        np.savez(fh, positions=np.zeros((1, 1, 3)))
    with zipfile.ZipFile(tmp_path / "m.h5", "w") as z:  # what torch.save writes, with a latentlab model inside
        z.writestr("m/data.pkl", b"\x80\x02}q\x00X\x06\x00\x00\x00formatq\x01X\x0f\x00\x00\x00latentlab-modelq\x02s.")
    with zipfile.ZipFile(tmp_path / "t.h5", "w") as z:
        z.writestr("t/data.pkl", b"\x80\x02}q\x00.")
    with open(tmp_path / "sim.h5", "wb") as fh:
        np.savez(fh, Q=np.zeros((2, 1, 1)), time=np.zeros(2), metadata=np.array("{}"))
    plt.figure().savefig(tmp_path / "fig.h5", format="png")
    plt.close("all")
    (tmp_path / "top.h5").write_text("REMARK hello\nATOM      1  CA  ALA A   1       0.000   0.000   0.000\n")
    (tmp_path / "text.h5").write_text("positions\n1 2 3\n")
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "bin.h5").write_bytes(bytes(range(256)))
    (tmp_path / "cut.h5").write_bytes((tmp_path / "data.bin").read_bytes()[:1500])
    (tmp_path / "folder.h5").mkdir()
    expected = {"data.bin": "latentlab-data", "other.pt": "hdf5", "a.h5": "npy", "z.h5": "npz", "m.h5": "latentlab-model",
                "t.h5": "torch-zip", "sim.h5": "latentlab-simulation", "fig.h5": "png", "top.h5": "pdb", "text.h5": "text",
                "empty.h5": "empty", "bin.h5": "unknown", "cut.h5": "hdf5-damaged", "folder.h5": "directory",
                "missing.h5": "missing"}
    assert {name: file_kind(tmp_path / name) for name in expected} == expected


def test_file_kind_knows_trajectories(tmp_path):
    import mdtraj as md

    from latentlab.data.sniff import file_kind
    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    traj = md.load(ALANINE_DIPEPTIDE_PDB)
    for ext, kind in (("dcd", "dcd"), ("xtc", "xtc"), ("trr", "trr")):
        getattr(traj, f"save_{ext}")(str(tmp_path / f"t.{ext}"))
        os.replace(tmp_path / f"t.{ext}", tmp_path / "t.data")
        assert file_kind(tmp_path / "t.data") == kind
    assert file_kind(ALANINE_DIPEPTIDE_PDB) == "pdb"


def test_trajectory_without_topology_names_the_fix(tmp_path):
    import mdtraj as md

    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    md.load(ALANINE_DIPEPTIDE_PDB).save_dcd(str(tmp_path / "t.dcd"))
    with pytest.raises(ValueError, match="t.dcd is a DCD trajectory, which stores coordinates but no atoms. "
                                         "Fix: pass --topology"):
        load(str(tmp_path / "t.dcd"), temperature=300)
    with pytest.raises(ValueError, match="topology: .*t.dcd is a DCD trajectory, not a topology"):
        load(str(tmp_path / "t.dcd"), topology=str(tmp_path / "t.dcd"), temperature=300)


# ---------------------------------------------------------------------- inferred topology (bonds)


def _bond_set(topology):
    return sorted(tuple(sorted((a.index, b.index))) for a, b in topology.bonds)


def _builtin(name):
    from latentlab.data import builtin_path

    if not os.path.exists(builtin_path(name)):
        pytest.skip(f"built-in {name!r} not generated (run latentlab/data/make_builtin.sh)")
    return load(name)


def test_bare_alanine_arrays_get_the_real_bonds_back(tmp_path):
    """Positions, forces and masses only (22 atoms): the inferred bonds are the force field's 21 bonds."""
    from latentlab.data.bonds import guess_topology

    ds = _builtin("alanine-dipeptide")
    top, guess = guess_topology(ds.positions, ds.masses)
    assert guess.rule == "covalent" and not guess.unknown_masses
    assert _bond_set(top) == _bond_set(ds.topology) and len(guess.bonds) == 21
    assert [a.element.symbol for a in top.atoms] == [a.element.symbol for a in ds.topology.atoms]
    # stored as PDB text in the data-set file, bonds included (CONECT records)
    bare = Dataset.from_arrays(ds.positions[:200], ds.forces[:200], masses=ds.masses, temperature=300, topology=top)
    bare.save(str(tmp_path / "bare.h5"))
    assert _bond_set(load(str(tmp_path / "bare.h5")).topology) == _bond_set(ds.topology)


def test_backbone_subset_gets_chain_bonds_and_rigid_rotation(tmp_path):
    """The 5 heavy atoms of phi/psi (C, N, CA, C, N), as CG data sets ship them: a 4-bond chain."""
    import torch

    from latentlab.data.bonds import guess_topology
    from latentlab.forces.torsion import rotation_fields, torsion_pmf_gradient

    ds = _builtin("alanine-dipeptide")
    atoms = [4, 6, 8, 10, 16]
    assert [ds.topology.atom(i).name for i in atoms] == ["C", "N", "CA", "C", "N"]
    top, guess = guess_topology(ds.positions[:, atoms], ds.masses[atoms])
    assert _bond_set(top) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [a.element.symbol for a in top.atoms] == ["C", "N", "C", "C", "N"]
    sub = Dataset.from_arrays(ds.positions[:, atoms], ds.forces[:, atoms], masses=ds.masses[atoms], temperature=300,
                              topology=top)
    cg_map = sub.map("dihedrals:0-1-2-3,1-2-3-4")
    fields = rotation_fields(cg_map, sub.topology)
    # for a 5-atom chain the rotating side of each bond is an end atom
    assert [(f.axis, f.moving) for f in fields] == [((1, 2), (0,)), ((2, 3), (4,))]
    g = torsion_pmf_gradient(cg_map, torch.as_tensor(sub.positions[:50], dtype=torch.float64),
                             torch.as_tensor(sub.forces[:50], dtype=torch.float64), sub.topology)
    assert g.shape == (50, 2) and torch.isfinite(g).all()


def test_all_atom_chignolin_bonds_and_constraint_groups_are_recovered():
    from latentlab.data.bonds import infer_bonds, rigid_groups

    full = _builtin("chignolin").allatom()  # 138 atoms, HBonds constraints
    guess = infer_bonds(full.positions, full.masses)
    assert [tuple(b) for b in guess.bonds.tolist()] == _bond_set(full.topology)
    np.testing.assert_array_equal(rigid_groups(full.positions, guess.bonds, full.masses), full.constraint_group)


def test_ca_trace_is_bonded_along_the_sequence():
    from latentlab.data.bonds import infer_bonds

    ds = _builtin("chignolin")  # CA atoms only
    guess = infer_bonds(ds.positions, ds.masses)
    assert guess.rule == "ca-trace" and guess.bonds.tolist() == [[i, i + 1] for i in range(9)]


def test_elements_from_masses():
    from latentlab.data.bonds import element_from_mass

    assert [element_from_mass(m) for m in (1.008, 2.014, 12.011, 14.007, 15.999, 32.06, 22.99)] == \
        ["H", "H", "C", "N", "O", "S", "Na"]
    assert element_from_mass(4.0) is None  # a repartitioned hydrogen is no element (never helium)
    assert element_from_mass(72.0) is None  # a coarse-grained bead


def test_no_bonds_for_isolated_particles():
    from latentlab.data.bonds import infer_bonds

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, size=(20, 10, 3))  # far apart coarse-grained beads
    guess = infer_bonds(x, np.full(10, 72.0))
    assert guess.rule == "none" and len(guess.bonds) == 0 and len(guess.unknown_masses) == 10


def test_inferred_topology_keeps_atom_order_through_the_file(tmp_path):
    """Interleaved molecules (atoms 0, 2 and 1, 3 bonded) and an atom of no element keep their order and bonds."""
    from latentlab.data.bonds import topology_from_bonds

    top = topology_from_bonds(["C", "O", "N", "H", None], [[0, 2], [1, 3]])
    x = np.array([[[0.0, 0, 0], [0.5, 0, 0], [0.14, 0, 0], [0.6, 0, 0], [1.0, 1.0, 1.0]]]).repeat(3, 0)
    ds = Dataset.from_arrays(x, masses=[12.011, 15.999, 14.007, 1.008, 72.0], temperature=300, topology=top,
                             check_units=False)
    ds.save(str(tmp_path / "order.h5"))
    back = load(str(tmp_path / "order.h5")).topology
    assert [a.element.symbol for a in back.atoms] == ["C", "O", "N", "H", "VS"]
    assert _bond_set(back) == [(0, 2), (1, 3)]
