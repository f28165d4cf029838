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


def test_unparseable_files_are_value_errors(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="HDF5|unknown file type|could not"):
        load(str(junk))
    npy = tmp_path / "junk.npy"
    npy.write_text("not numpy")
    with pytest.raises(ValueError, match="could not be read as .npy"):
        load(str(npy), temperature=300, masses=MASSES)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a latentlab data set|could not"):
        Dataset.from_h5(str(other))
    txt = tmp_path / "data.csv"
    txt.write_text("1,2,3")
    with pytest.raises(ValueError, match="unknown file type"):
        load(str(txt))


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
