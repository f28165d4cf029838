"""OpenMM generation: file layout, resumability, atomic output, constraint-free forces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from latentlab.cli import main
from latentlab.data import load
from latentlab.data.generate import GenerateConfig, aggregate_forces, generate



def _tiny(tmp_path, name="ala.h5", **kw):
    cfg = dict(system="alanine-dipeptide", ns=0.002, out=str(tmp_path / name), save_every_ps=0.1,
               equilibrate_ps=0.1, platform="Reference", progress=False)
    cfg.update(kw)
    return generate(GenerateConfig(**cfg), log=lambda *a: None)


def test_generate_alanine_writes_documented_layout(tmp_path):
    path = _tiny(tmp_path)
    with h5py.File(path, "r") as fh:
        assert fh.attrs["format"] == "latentlab-dataset"
        assert fh["positions"].shape == (20, 22, 3) and fh["positions"].dtype == np.float32
        assert fh["forces"].shape == (20, 22, 3) and fh["forces"].dtype == np.float32
        assert fh["energies"].shape == (20,) and fh["energies"].dtype == np.float64
        assert fh["masses"].shape == (22,)
        for key in ("temperature", "forcefield", "timestep_ps", "friction_per_ps", "seed", "versions", "default_map",
                    "constraints"):
            assert key in fh.attrs, key
        assert fh.attrs["default_map"] == "dihedrals:phi-psi"
        assert fh.attrs["constraints"] == "none"
        assert json.loads(fh.attrs["versions"])["openmm"]
    ds = load(path)
    np.testing.assert_allclose(ds.time, 0.1 * np.arange(1, 21), atol=1e-9)
    # physical masses (C 12.01, H 1.008), bonds in nm
    assert ds.masses.min() == pytest.approx(1.008, abs=1e-3) and ds.masses.max() == pytest.approx(16.0, abs=0.01)
    bonds = np.array([(a.index, b.index) for a, b in ds.topology.bonds])
    d = np.linalg.norm(ds.positions[:, bonds[:, 0]] - ds.positions[:, bonds[:, 1]], axis=-1)
    assert 0.09 < d.min() and d.max() < 0.17
    assert not os.path.exists(path + ".partial")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_generated_forces_are_minus_gradient_of_energy(tmp_path):
    """F = -grad U in kJ/mol/nm: a small displacement along F lowers U by |F|^2 h."""
    import openmm
    import openmm.app as app
    import openmm.unit as u

    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    ds = load(_tiny(tmp_path))
    pdb = app.PDBFile(ALANINE_DIPEPTIDE_PDB)
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x = ds.positions[3].astype(np.float64)
    f = ds.forces[3].astype(np.float64)
    h = 1e-6  # nm^2 / (kJ/mol) scale: displacement h*F
    energies = []
    for s in (-1.0, 1.0):
        ctx.setPositions((x + s * h * f) * u.nanometer)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
    dU = (energies[1] - energies[0]) / 2.0
    assert dU == pytest.approx(-h * (f**2).sum(), rel=2e-2)
    ctx.setPositions(x * u.nanometer)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert e == pytest.approx(ds.energies[3], abs=0.05)


def test_alanine_structure_is_l_alanine_in_c7eq(tmp_path):
    """The built structure is L-Ala (N-C-CA-CB improper ~ +120 deg, as in 1UAO) and starts at negative phi."""
    import mdtraj as md

    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    t = md.load(ALANINE_DIPEPTIDE_PDB)
    ala = [r for r in t.topology.residues if r.name == "ALA"][0]
    g = {a.name: a.index for a in ala.atoms}
    improper = np.degrees(md.compute_dihedrals(t, [[g["N"], g["C"], g["CA"], g["CB"]]])[0, 0])
    assert 100 < improper < 140
    assert np.degrees(md.compute_phi(t)[1][0, 0]) < 0


def test_generate_refuses_existing_output_and_changed_settings(tmp_path):
    path = _tiny(tmp_path)
    with pytest.raises(ValueError, match="exists.*--resume"):
        _tiny(tmp_path)
    with pytest.raises(ValueError, match="settings differ"):
        _tiny(tmp_path, ns=0.004, resume=True, temperature=350.0)
    assert load(path).n_frames == 20


def test_generate_resume_extends_finished_file_without_gaps(tmp_path):
    path = _tiny(tmp_path)
    first = load(path)
    _tiny(tmp_path, ns=0.005, resume=True)
    ds = load(path)
    assert ds.n_frames == 50
    np.testing.assert_allclose(ds.time, 0.1 * np.arange(1, 51), atol=1e-9)
    np.testing.assert_array_equal(ds.positions[:20], first.positions)


@pytest.mark.parametrize("kw, match", [
    (dict(ns=-1), "ns"),
    (dict(temperature=0), "temperature"),
    (dict(save_every_ps=0.00015), "whole number"),
    (dict(system="water-box"), "system"),
    (dict(system="protein"), "--pdb"),
    (dict(constraints="allbonds"), "constraints"),
])
def test_generate_rejects_bad_options(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny(tmp_path, **kw)
    assert os.listdir(tmp_path) == []


def test_generate_missing_pdb_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _tiny(tmp_path, system="protein", pdb=str(tmp_path / "nope.pdb"))


def test_aggregate_forces_cancels_internal_pair_forces():
    """A constraint force (equal and opposite on the bonded pair) drops out of the group sum."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4, 5, 3))
    groups = np.array([0, 0, 2, 2, 4])  # atoms 1 -> 0 and 3 -> 2 are constrained hydrogens
    g = rng.normal(size=(4, 3))
    f_con = f.copy()
    f_con[:, 0] += g
    f_con[:, 1] -= g
    np.testing.assert_allclose(aggregate_forces(f_con, groups, np.array([0, 2, 4])),
                               aggregate_forces(f, groups, np.array([0, 2, 4])), atol=1e-12)
    with pytest.raises(ValueError, match="heavy atoms only"):
        aggregate_forces(f, groups, np.array([1]))


@pytest.mark.slow
def test_generate_chignolin_ca_block_holds_aggregated_forces(tmp_path):
    path = str(tmp_path / "chig.h5")
    generate(GenerateConfig(system="chignolin", ns=0.004, out=path, save_every_ps=0.2,
                            allatom_every_ps=0.4, equilibrate_ps=0.2, platform="CPU", progress=False), log=lambda *a: None)
    ca = load(path)
    full = ca.allatom()
    assert (ca.n_atoms, full.n_atoms) == (10, 138)
    assert ca.forces_aggregated and full.constraint_group is not None
    assert [a.name for a in ca.topology.atoms] == ["CA"] * 10
    idx = np.asarray(h5py.File(path, "r")["allatom"].attrs["atom_indices"])
    # every 2nd CA frame is an all-atom frame: aggregating the raw forces reproduces the CA block
    np.testing.assert_allclose(full.cg_forces(idx), ca.forces[1::2], rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(full.positions[:, idx], ca.positions[1::2], atol=1e-6)
    # HBonds constraints hold: every H is at its constrained distance from its group root
    h = np.nonzero(full.constraint_group != np.arange(full.n_atoms))[0]
    d = np.linalg.norm(full.positions[:, h] - full.positions[:, full.constraint_group[h]], axis=-1)
    assert d.std(axis=0).max() < 1e-4
    # stored masses are physical, not repartitioned
    assert full.masses[h].max() < 1.1


@pytest.mark.slow
def test_generate_killed_and_resumed_has_no_lost_or_duplicated_frames(tmp_path):
    out = str(tmp_path / "kill.h5")
    cmd = [sys.executable, "-m", "latentlab.cli", "generate", "alanine-dipeptide", "--ns", "1", "--save-every", "0.05",
           "--equilibrate", "0.1", "--checkpoint-every", "0.2", "--platform", "Reference", "--no-progress", "--out", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = out + ".partial/checkpoint.npz"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the generate subprocess exited early with code {proc.returncode}")
            if os.path.exists(ck) and len([f for f in os.listdir(out + ".partial") if f.startswith("seg-")]) >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never wrote three checkpointed segments")
    finally:
        proc.kill()
        proc.wait()
    assert not os.path.exists(out), "killed before the end, so the output must not exist yet"
    with np.load(ck) as z:
        n_saved = int(z["n_frames"])
        n_segments = int(z["n_segments"])
    segs = sorted(f for f in os.listdir(out + ".partial") if f.startswith("seg-"))[:n_segments]
    saved = np.concatenate([np.load(os.path.join(out + ".partial", f))["positions"] for f in segs])
    assert len(saved) == n_saved > 0
    assert main(cmd[3:] + ["--resume"]) == 0
    ds = load(out)
    assert ds.n_frames == 20000
    np.testing.assert_allclose(ds.time, 0.05 * np.arange(1, 20001), atol=1e-6)
    assert len(np.unique(ds.time)) == ds.n_frames
    np.testing.assert_array_equal(ds.positions[:n_saved], saved)  # checkpointed frames survive unchanged
    assert not os.path.exists(out + ".partial")


def test_generate_resume_of_complete_file_is_a_no_op(tmp_path):
    path = _tiny(tmp_path)
    before = os.path.getmtime(path)
    assert _tiny(tmp_path, resume=True) == path
    assert os.path.getmtime(path) == before
    assert not os.path.exists(path + ".partial")


def test_generate_resume_of_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    out = tmp_path / "ala.h5"
    os.makedirs(str(out) + ".partial")  # what a kill during set-up leaves behind
    _tiny(tmp_path, resume=True)
    assert load(str(out)).n_frames == 20


@pytest.mark.slow
def test_generate_chignolin_without_pdb_starts_from_the_builtin_topology(tmp_path):
    from latentlab.data import builtin_path

    if not os.path.exists(builtin_path("chignolin")):
        pytest.skip("built-in chignolin not generated")
    path = str(tmp_path / "c.h5")
    generate(GenerateConfig(system="chignolin", ns=0.002, out=path, save_every_ps=0.2, equilibrate_ps=0.0,
                            platform="CPU", progress=False), log=lambda *a: None)
    ds = load(path)
    assert (ds.n_frames, ds.n_atoms, ds.allatom().n_atoms) == (10, 10, 138)


# ----------------------------------------------------------------------------- output policy and blow-ups (issue 10)

CLI_ALA = ["generate", "alanine-dipeptide", "--ns", "0.002", "--save-every", "0.1", "--equilibrate", "0.1", "--no-progress"]


def _files(directory) -> dict:
    """Every file under ``directory`` with its bytes (folders included, as None)."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), directory)] = None
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), directory)] = fh.read()
    return out


@pytest.mark.parametrize("platform", ["Reference", "auto"])
def test_generate_blow_up_is_one_clear_error_that_suggests_a_time_step(tmp_path, capsys, platform):
    """--timestep 50 fs: OpenMM's NaN traceback becomes exit 2 naming the time step; nothing is left behind."""
    assert main(CLI_ALA + ["--timestep", "50", "--platform", platform, "--out", str(tmp_path / "t50")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "timestep: the simulation blew up" in err and "50 fs is too large" in err
    assert "use a smaller --timestep, e.g. 1 fs" in err
    assert os.listdir(tmp_path) == []


def test_blow_up_at_the_preset_time_step_suggests_half_of_it():
    from latentlab.data.generate import _blow_up

    cfg = GenerateConfig(system="alanine-dipeptide", ns=0.001, out="x.h5", timestep_fs=0.5).resolved()
    with pytest.raises(ValueError, match=r"e\.g\. 0\.25 fs .*check the starting structure"):
        _blow_up(cfg, "near 1 ps")


def test_refused_resume_leaves_every_file_as_it_was(tmp_path, capsys):
    out = str(tmp_path / "ala.h5")
    assert main(CLI_ALA + ["--platform", "Reference", "--out", out]) == 0
    before = _files(tmp_path)
    # changed settings against a finished file, and against an interrupted run
    assert main(CLI_ALA + ["--platform", "Reference", "--out", out, "--resume", "--ns", "0.004", "--temperature", "350"]) == 2
    assert "settings differ" in capsys.readouterr().err
    assert _files(tmp_path) == before
    with pytest.raises(ValueError, match="settings differ"):
        # an interrupted run: a guard that stops at the second checkpoint leaves a resumable OUT.partial/
        from latentlab.data.generate import Generator

        calls = []

        def stop_at_second_checkpoint():
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt

        cfg = GenerateConfig(system="alanine-dipeptide", ns=0.01, out=str(tmp_path / "cut.h5"), save_every_ps=0.1,
                             equilibrate_ps=0.1, platform="Reference", progress=False, checkpoint_every_s=0.0)
        with pytest.raises(KeyboardInterrupt):
            Generator(cfg, log=lambda *a: None, guard=stop_at_second_checkpoint).run()
        assert os.path.exists(str(tmp_path / "cut.h5.partial" / "checkpoint.npz"))  # frames saved: kept for --resume
        before = _files(tmp_path)
        _tiny(tmp_path, name="cut.h5", ns=0.01, resume=True, temperature=350.0)
    assert _files(tmp_path) == before
    assert main(CLI_ALA + ["--platform", "Reference", "--out", str(tmp_path / "none.h5"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _files(tmp_path) == before
    # the interrupted run resumes to a complete file
    _tiny(tmp_path, name="cut.h5", ns=0.01, resume=True)
    ds = load(str(tmp_path / "cut.h5"))
    np.testing.assert_allclose(ds.time, 0.1 * np.arange(1, 101), atol=1e-9)
    assert not os.path.exists(str(tmp_path / "cut.h5.partial"))


def test_a_failure_before_the_first_checkpoint_removes_the_partial_folder_it_created(tmp_path):
    from latentlab.data.generate import Generator

    def stop():
        raise RuntimeError("disk full")

    cfg = GenerateConfig(system="alanine-dipeptide", ns=0.002, out=str(tmp_path / "a.h5"), save_every_ps=0.1,
                         equilibrate_ps=0.1, platform="Reference", progress=False)
    with pytest.raises(RuntimeError, match="disk full"):
        Generator(cfg, log=lambda *a: None, guard=stop).run()
    assert os.listdir(tmp_path) == []


def test_out_without_extension_writes_h5_and_prints_the_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(CLI_ALA + ["--platform", "Reference", "--out", "gen"]) == 0
    assert "wrote gen.h5: 20 frames" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["gen.h5"]
    assert load("gen.h5").n_frames == 20
    assert main(["info", "gen.h5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 20
    # `--out gen` again refers to gen.h5: refused (naming --resume and --overwrite), then replaced with --overwrite
    before = _files(tmp_path)
    assert main(CLI_ALA + ["--platform", "Reference", "--out", "gen"]) == 2
    err = capsys.readouterr().err
    assert "gen.h5 exists" in err and "--resume" in err and "--overwrite" in err
    assert _files(tmp_path) == before
    assert main(CLI_ALA + ["--platform", "Reference", "--out", "gen", "--overwrite", "--seed", "3"]) == 0
    assert _files(tmp_path) != before and sorted(os.listdir(tmp_path)) == ["gen.h5"]


def test_output_onto_an_input_or_into_a_missing_directory_is_refused_before_any_work(tmp_path, capsys):
    src = _tiny(tmp_path, name="src.h5")
    before = _files(tmp_path)
    assert main(CLI_ALA + ["--platform", "Reference", "--start-from", src, "--out", src, "--overwrite"]) == 2
    assert "also an input" in capsys.readouterr().err
    assert main(CLI_ALA + ["--platform", "Reference", "--out", str(tmp_path / "no" / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _files(tmp_path) == before


def test_start_from_a_data_set_frame(tmp_path):
    """--start-from DATA --start-frame I: the run starts from frame I (minimised, then 0.1 ps on)."""
    src = load(_tiny(tmp_path, name="src.h5"))
    path = _tiny(tmp_path, name="cont.h5", start_from=str(tmp_path / "src.h5"), start_frame=7, equilibrate_ps=0.0, seed=1)
    ds = load(path)
    rms = [np.sqrt(((ds.positions[0] - x) ** 2).sum(-1).mean()) for x in src.positions]
    assert int(np.argmin(rms)) in (6, 7, 8)  # nearest data frame: the start (or a neighbour 0.1 ps away)
    with h5py.File(path, "r") as fh:
        assert fh.attrs["start_frame"] == 7 and fh.attrs["start_from"] == str(tmp_path / "src.h5")
    with pytest.raises(ValueError, match="start_frame: got 20 but .* has 20 frames"):
        _tiny(tmp_path, name="bad.h5", start_from=str(tmp_path / "src.h5"), start_frame=20)
    with pytest.raises(ValueError, match="start_frame: given without a data set"):
        _tiny(tmp_path, name="bad.h5", start_frame=2)
    assert sorted(os.listdir(tmp_path)) == ["cont.h5", "src.h5"]
