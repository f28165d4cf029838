"""The data commands: generate, import, info, datasets, plot (public contract: names, options, JSON keys)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from latentlab.cli import main

INFO_KEYS = {"frames", "atoms", "temperature", "has_forces", "has_energies", "has_topology"}
DATASETS_KEYS = {"name", "frames", "atoms", "temperature", "has_forces", "default_map"}


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_then_info_json_shows_forces_and_energies(tmp_path, capsys):
    out = str(tmp_path / "x.h5")
    assert main(["generate", "alanine-dipeptide", "--ns", "0.002", "--save-every", "0.1", "--equilibrate", "0.1",
                 "--platform", "Reference", "--no-progress", "--out", out]) == 0
    info = _json(capsys, ["info", out, "--json"])
    assert INFO_KEYS <= set(info)
    assert (info["frames"], info["atoms"], info["temperature"]) == (20, 22, 300.0)
    assert info["has_forces"] and info["has_energies"] and info["has_topology"]
    assert info["default_map"] == "dihedrals:phi-psi"


def _three_atom_arrays(tmp_path, n=2000):
    """Exact samples of the analytic three-atom system saved as bare arrays in Angstrom and kcal/mol."""
    from latentlab.data import load

    ds = load("three-atom", n=n, seed=2)
    np.save(tmp_path / "pos.npy", 10 * ds.positions)  # nm -> Angstrom
    np.save(tmp_path / "frc.npy", ds.forces / 41.84)  # kJ/mol/nm -> kcal/mol/Angstrom
    np.save(tmp_path / "e.npy", ds.energies / 4.184)
    return ds


def test_import_npy_with_units_then_info(tmp_path, capsys):
    ds = _three_atom_arrays(tmp_path)
    out = str(tmp_path / "imp.h5")
    assert main(["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"),
                 "--energies", str(tmp_path / "e.npy"), "--masses", "12,14,16", "--temperature", "300",
                 "--length-unit", "angstrom", "--energy-unit", "kcal/mol", "--dt", "0.5", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "force check: consistent" in printed
    info = _json(capsys, ["info", out, "--json"])
    assert (info["frames"], info["atoms"], info["temperature"]) == (2000, 3, 300.0)
    assert info["has_forces"] and info["has_energies"] and not info["has_topology"]  # 0.4 nm apart: no bonds
    assert info["topology_source"].startswith("none") and info["dropped_frames"] == 0
    assert info["time_ps"] == [0.0, 0.5 * 1999]
    back = load_file(out)
    np.testing.assert_allclose(back.forces, ds.forces, rtol=1e-5)


def load_file(path):
    from latentlab.data import load

    return load(path)


@pytest.mark.parametrize("factor, energy_unit, match", [
    # the three unit mistakes of issue 10 (the arrays hold kcal/mol/Angstrom forces times `factor`)
    (1.0, "kJ/mol", r"4.184x too small for kJ/mol/angstrom; they fit the positions if they were in kcal/mol/angstrom"),
    (10.0, "kcal/mol", r"10x too large for kcal/mol/angstrom; they fit the positions if they were in kcal/mol/nm"),
    (4.184, "kcal/mol", r"4.184x too large for kcal/mol/angstrom; they fit the positions if they were in kJ/mol/angstrom"),
    (-1.0, "kcal/mol", r"point uphill: they look like gradients"),
])
def test_import_refuses_forces_that_do_not_fit_the_positions(tmp_path, capsys, factor, energy_unit, match):
    import re

    _three_atom_arrays(tmp_path)
    np.save(tmp_path / "frc.npy", factor * np.load(tmp_path / "frc.npy"))
    argv = ["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"),
            "--masses", "12,14,16", "--temperature", "300", "--length-unit", "angstrom", "--energy-unit", energy_unit,
            "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Fix: " in err and "--no-check" in err, err
    assert not os.path.exists(tmp_path / "o.h5")
    assert main(argv + ["--no-check"]) == 0  # the user can override
    assert "force check: skipped (--no-check)" in capsys.readouterr().out


def test_import_force_unit_option_fixes_the_mistake_it_names(tmp_path, capsys):
    _three_atom_arrays(tmp_path)
    np.save(tmp_path / "frc.npy", 10.0 * np.load(tmp_path / "frc.npy"))  # now kcal/mol/nm, positions still Angstrom
    argv = ["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"),
            "--masses", "12,14,16", "--temperature", "300", "--length-unit", "angstrom", "--energy-unit", "kcal/mol",
            "--force-unit", "kcal/mol/nm", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert "force check: consistent" in capsys.readouterr().out


def test_import_names_a_wrong_temperature(tmp_path, capsys):
    _three_atom_arrays(tmp_path)
    argv = ["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"),
            "--masses", "12,14,16", "--temperature", "400", "--length-unit", "angstrom", "--energy-unit", "kcal/mol",
            "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(argv) == 2
    import re

    assert re.search(r"consistent with a temperature of about (29\d|30\d) K, not the stated 400 K", capsys.readouterr().err)


def test_import_without_extension_adds_h5_and_refuses_to_overwrite(tmp_path, capsys):
    _three_atom_arrays(tmp_path, n=300)
    base = ["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"), "--masses",
            "12,14,16", "--temperature", "300", "--length-unit", "angstrom", "--energy-unit", "kcal/mol"]
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "ala2")]) == 0
    assert f"wrote {tmp_path / 'ala2.h5'}" in capsys.readouterr().out
    before = (tmp_path / "ala2.h5").read_bytes()
    assert main(base + ["--out", str(tmp_path / "ala2")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "ala2.h5").read_bytes() == before
    assert main(base + ["--out", str(tmp_path / "ala2"), "--overwrite", "--name", "again"]) == 0
    assert main(base + ["--out", str(tmp_path / "frc.npy"), "--overwrite"]) == 2  # never onto an input
    assert "also an input" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "ala2.h5"), "--json"]) == 0


def test_import_drops_nan_frames_leaving_gaps_in_time(tmp_path, capsys):
    _three_atom_arrays(tmp_path, n=400)
    pos = np.load(tmp_path / "pos.npy")
    pos[[5, 17]] = np.nan
    np.save(tmp_path / "pos.npy", pos)
    out = str(tmp_path / "d.h5")
    argv = ["import", "--positions", str(tmp_path / "pos.npy"), "--forces", str(tmp_path / "frc.npy"), "--masses",
            "12,14,16", "--temperature", "300", "--length-unit", "angstrom", "--energy-unit", "kcal/mol", "--dt", "2",
            "--out", out]
    assert main(argv) == 2
    assert "2 frame(s) contain NaN or inf (frame indices 5, 17)" in capsys.readouterr().err
    assert main(argv + ["--drop-nonfinite"]) == 0
    info = _json(capsys, ["info", out, "--json"])
    assert (info["frames"], info["dropped_frames"]) == (398, 2)
    ds = load_file(out)
    gaps = np.nonzero(np.diff(ds.time) != 2.0)[0]
    np.testing.assert_array_equal(ds.time[gaps], [8.0, 32.0])  # 4 -> 6 and 16 -> 18 (frames 5 and 17 missing)
    assert ds.metadata["dropped_frame_indices"] == "[5, 17]"


def test_import_validates_the_default_map(tmp_path, capsys):
    _three_atom_arrays(tmp_path, n=300)
    base = ["import", "--positions", str(tmp_path / "pos.npy"), "--masses", "12,14,16", "--temperature", "300",
            "--length-unit", "angstrom", "--out", str(tmp_path / "m.h5")]
    for spec, match in (("", "--default-map: is empty"), ("banana:1", "unknown map kind 'banana'"),
                        ("distances:0-7", "out of range")):
        capsys.readouterr()
        assert main(base + ["--default-map", spec]) == 2
        assert match in capsys.readouterr().err
    assert main(base + ["--default-map", "triangle:0,1,2"]) == 0
    assert load_file(str(tmp_path / "m.h5")).default_map == "triangle:0,1,2"


@pytest.mark.parametrize("extra, match", [
    (["--masses", "12,14"], "2 entries but the system has 3 atoms"),
    (["--masses", "12,14,abc"], "could not parse"),
    (["--masses", "12,14,16", "--length-unit", "nm"], "look like Angstrom"),
    (["--masses", "12,14,16", "--forces", "MISSING"], "does not exist"),
])
def test_import_errors_are_one_clean_line_and_write_nothing(tmp_path, capsys, extra, match):
    base = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.0, 1.4, 0.0]])
    np.save(tmp_path / "pos.npy", np.repeat(base[None], 5, 0))
    extra = [str(tmp_path / "nope.npy") if e == "MISSING" else e for e in extra]
    argv = ["import", "--positions", str(tmp_path / "pos.npy"), "--temperature", "300", "--length-unit", "angstrom",
            "--out", str(tmp_path / "o.h5")] + extra
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err
    import re

    assert re.search(match, err), err
    assert not os.path.exists(tmp_path / "o.h5")
    assert sorted(os.listdir(tmp_path)) == ["pos.npy"]


def test_import_refuses_temperature_zero(tmp_path, capsys):
    np.save(tmp_path / "pos.npy", np.zeros((2, 1, 3)))
    assert main(["import", "--positions", str(tmp_path / "pos.npy"), "--masses", "1", "--temperature", "0",
                 "--out", str(tmp_path / "o.h5")]) == 2
    assert "temperature" in capsys.readouterr().err


def test_datasets_json_lists_required_keys(capsys):
    rows = _json(capsys, ["datasets", "--json"])
    names = [r["name"] for r in rows]
    assert {"three-atom", "double-well", "gaussian-mixture"} <= set(names)
    for r in rows:
        assert DATASETS_KEYS <= set(r)
    for r in rows:
        if r["name"] == "alanine-dipeptide":
            assert r["default_map"] == "dihedrals:phi-psi" and r["frames"] >= 10000
        if r["name"] == "chignolin":
            assert r["default_map"] == "triangle:name CA and (resid 0 5 9)" and r["frames"] >= 10000


def test_info_accepts_builtin_names(capsys):
    info = _json(capsys, ["info", "double-well", "--json"])
    assert info["atoms"] == 1 and info["has_forces"]


def test_info_unknown_data_is_clean_error(capsys):
    assert main(["info", "no-such-data-set"]) == 2
    assert "neither a file nor a built-in" in capsys.readouterr().err


def test_plot_writes_png(tmp_path):
    out = tmp_path / "dw.png"
    assert main(["plot", "double-well", "--out", str(out), "--bins", "20"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["dw.png"]


def test_plot_with_explicit_map_on_three_atom(tmp_path):
    out = tmp_path / "t.png"
    assert main(["plot", "three-atom", "--map", "distances:0-1", "--out", str(out)]) == 0
    assert out.exists()


def test_plot_bad_map_is_clean_error(tmp_path, capsys):
    assert main(["plot", "three-atom", "--map", "nonsense:1", "--out", str(tmp_path / "x.png")]) == 2
    assert "spec" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def _need_builtin(name):
    from latentlab.data import builtin_path

    if not os.path.exists(builtin_path(name)):
        pytest.skip(f"built-in {name!r} not generated (run latentlab/data/make_builtin.sh)")


def test_plot_builtin_alanine_default_map(tmp_path):
    _need_builtin("alanine-dipeptide")
    out = tmp_path / "ala.png"
    assert main(["plot", "alanine-dipeptide", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_chignolin_default_map_is_the_triangle_of_bruce_et_al():
    """CA of residues 1, 6, 10 in the order a, b (vertex, residue 6), c."""
    _need_builtin("chignolin")
    from latentlab.data import load

    ds = load("chignolin")
    cg_map = ds.map()
    assert ds.default_map == "triangle:name CA and (resid 0 5 9)"
    assert tuple(cg_map.atoms) == (0, 5, 9)
    assert [ds.topology.atom(i).residue.index for i in cg_map.atoms] == [0, 5, 9]
    assert cg_map.names[:2] == ["r1", "r2"] or len(cg_map.names) == 3
    full = ds.allatom()
    assert full.n_atoms == 138 and full.n_frames >= ds.n_frames // 10 - 1


def test_info_reads_model_and_sim_files_by_content(tmp_path, capsys):
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "data", "model-0.1.0-three-atom.pt"), tmp_path / "model")  # no extension
    shutil.copy(os.path.join(here, "data", "sim-0.1.0-three-atom.npz"), tmp_path / "run.h5")  # misleading one
    model = _json(capsys, ["info", str(tmp_path / "model"), "--json"])
    assert model["kind"] == "latentlab-model" and model["map"] == "triangle:0,1,2" and model["parameters"] > 0
    assert model["coordinates"] == ["r1", "r2", "cos"] and model["temperature"] == 300.0 and model["training"] == "force-matching"
    sim = _json(capsys, ["info", str(tmp_path / "run.h5"), "--json"])
    assert sim["kind"] == "latentlab-simulation" and (sim["records"], sim["walkers"], sim["n_cg"]) == (2, 8, 3)
    assert sim["dt"] == 0.002 and sim["diagnostics"]["reseeded"] == 0
    assert main(["info", str(tmp_path / "model")]) == 0
    assert "latentlab-model" in capsys.readouterr().out


def test_import_bare_constrained_arrays_finds_bonds_and_constraint_groups(tmp_path, capsys):
    """Chignolin's all-atom frames (HBonds constraints) as bare arrays: bonds and rigid X-H groups come back."""
    _need_builtin("chignolin")
    from latentlab.data import load

    full = load("chignolin").allatom()
    np.savez(tmp_path / "chig.npz", positions=full.positions, forces=full.forces, masses=full.masses)
    out = str(tmp_path / "chig.h5")
    assert main(["import", "--positions", str(tmp_path / "chig.npz"), "--temperature", "300", "--dt", "5",
                 "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "141 bonds (covalent rule)" in printed and "force check: consistent" in printed
    back = load(out)
    np.testing.assert_array_equal(back.constraint_group, full.constraint_group)
    assert sorted((a.index, b.index) for a, b in back.topology.bonds) == \
        sorted(tuple(sorted((a.index, b.index))) for a, b in full.topology.bonds)
