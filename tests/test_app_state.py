"""Dashboard logic without a browser: the param state objects of app/state.py (installed as latentlab_app) and the views."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("param")

from latentlab.maps import spec_for_atoms  # noqa: E402
from latentlab_app.state import Session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def three_atom():
    return Session("three-atom")


def test_import_latentlab_does_not_import_panel():
    code = "import sys, latentlab, latentlab.reconstruct, latentlab.cli.serve; print('panel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_default_session_opens_chignolin_or_says_why_not():
    s = Session()
    if os.path.exists(os.path.join(ROOT, "latentlab", "data", "builtin", "chignolin.h5")):
        assert s.data.dataset.name == "chignolin"
        assert s.map.spec == "triangle:name CA and (resid 0 5 9)"
        assert s.map.cg_map.names == ["r1", "r2", "cos"]
    else:
        assert "chignolin" in s.data.message and "alanine-dipeptide" in s.data.message
        assert s.data.dataset.name == "alanine-dipeptide"
    assert not s.data.error


def test_bad_selection_bad_map_and_unreadable_file_become_messages(tmp_path):
    s = Session("alanine-dipeptide")
    assert not s.atoms.select("name XX and")
    assert "mdtraj cannot parse" in s.atoms.error
    assert not s.map.build("triangle:0,1")
    assert "exactly 3 atoms" in s.map.error
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not hdf5")
    assert not s.data.load(str(bad))
    assert "cannot load" in s.data.error
    assert s.data.dataset.name == "alanine-dipeptide"  # the previous data set is kept


def test_rank_deficient_map_reports_an_error_not_an_exception(three_atom):
    s = three_atom
    assert not s.map.build("com:0,1,2;0,1,2")  # two identical beads: A would be singular
    assert "rank-deficient" in s.map.error
    assert s.map.spec == "triangle:0,1,2"  # the previous map is kept
    assert s.map.use_default()


def test_clicks_toggle_atoms_and_build_maps_of_each_kind():
    s = Session("alanine-dipeptide")
    s.atoms.clear()
    for i in (4, 6, 8, 14):
        s.atoms.toggle(i)
    s.atoms.toggle(14)
    assert s.atoms.picked == [4, 6, 8]
    assert s.map.from_picked("triangle") and s.map.cg_map.n_cg == 3
    assert s.map.from_picked("angles") and s.map.spec == "angles:4-6-8"
    s.atoms.toggle(14)
    assert s.map.from_picked("dihedrals") and s.map.cg_map.periodic == [True]
    assert spec_for_atoms("pca", [1, 2, 3]) == "pca:1,2,3:2"
    s.atoms.toggle(99)
    assert "outside" in s.atoms.error
    assert s.atoms.select("name CA") and s.atoms.picked == [8]


def test_consistency_of_triangle_map_and_closed_form(three_atom):
    s = three_atom
    s.map.use_default()
    s.map.check(blocking=True)
    assert s.map.report["verdict"] == "consistent"
    assert s.map.closed_form["available"] and s.map.closed_form["max_relative_difference"] < 1e-10
    assert len(s.map.spread["edges"]) == 2


def test_training_adds_history_saves_loads_and_stops_within_a_second(three_atom, tmp_path):
    pytest.importorskip("latentlab.training")
    t = three_atom.train
    three_atom.simulation.after_training = False  # keep the CPU for the test (auto-start is tested below)
    t.epochs = 3
    assert t.start()
    t.wait(120)
    assert not t.running and not t.error, t.error
    epochs = [h["epoch"] for h in t.history]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 3  # one entry per epoch, no batch events
    assert t.parity and len(t.parity["target"]) == len(t.parity["predicted"])
    path = str(tmp_path / "model.pt")
    assert t.save(path) and t.load(path) and "loaded" in t.model_label
    t.epochs = 10000
    assert t.start()
    time.sleep(1.5)
    t0 = time.perf_counter()
    t.stop()
    t.wait(10)
    assert time.perf_counter() - t0 < 1.0 and not t.running
    assert t.status.startswith("stopped")


def test_simulation_fills_histogram_on_reference_bins_and_pause_stops(three_atom):
    s = three_atom
    assert s.train.use_exact()
    sim = s.simulation
    sim.reset()
    sim.n_walkers = 256
    assert sim.start(), sim.error
    deadline = time.time() + 60
    while sim.snapshot()["n_samples"] == 0 and time.time() < deadline:
        time.sleep(0.2)
    t0 = time.perf_counter()
    sim.pause()
    assert time.perf_counter() - t0 < 1.0 and not sim.running
    snap = sim.snapshot()
    assert snap["n_samples"] > 0 and snap["names"] == ["r1", "r2", "cos"]
    for edges, ref, model in zip(snap["edges"], snap["reference"], snap["model"]):
        assert len(ref) == len(model) == len(edges) - 1
        assert np.isclose((model * np.diff(edges)).sum(), 1.0)
    time.sleep(0.5)
    assert sim.snapshot()["n_samples"] == snap["n_samples"]
    assert snap["kinetic"].shape[1] == 2 and snap["reseeded"] == 0
    x = s.reconstruct.current()
    assert x.shape == (3, 3) and "reference frame" in s.reconstruct.info
    assert s.reconstruct.at(0).shape == (3, 3)
    sim.reset()
    assert sim.snapshot()["n_samples"] == 0


def test_simulation_without_model_explains_itself():
    s = Session("alanine-dipeptide")
    assert not s.simulation.start()
    assert "no model" in s.simulation.error
    assert not s.train.use_exact() and "no exact PMF" in s.train.error


def test_sessions_have_independent_state():
    a, b = Session("three-atom"), Session("three-atom")
    a.atoms.toggle(0)
    a.map.build("distances:0-1")
    assert b.map.spec == "triangle:0,1,2" and a.atoms.picked != b.atoms.picked


def test_dashboard_views_refresh_from_state():
    pn = pytest.importorskip("panel")
    from latentlab_app.views import Dashboard

    dash = Dashboard("three-atom")
    dash.tabs.active = 3  # only the visible tab is redrawn
    dash.s.train.use_exact()
    dash.s.simulation.n_walkers = 64
    dash.s.simulation.start()
    time.sleep(1.5)
    dash.tick()
    dash.s.simulation.pause()
    dash.tick()
    assert sum(float(np.sum(src.data["model"])) for src in dash.simulate.hist_srcs) > 0
    assert "samples" in dash.simulate.stats.object
    dash.structure.ngl.picked_event = [1, 123]
    assert 1 not in dash.s.atoms.picked or dash.s.atoms.picked.count(1) == 1
    assert isinstance(dash.__panel__(), pn.Column)


def test_uploaded_file_is_loaded_or_refused_with_a_message(tmp_path):
    s = Session("three-atom")
    assert not s.data.save_upload("junk.h5", b"\x00not a data set", directory=str(tmp_path))
    assert "cannot load" in s.data.error and s.data.dataset.name == "three-atom"
    src = os.path.join(ROOT, "latentlab", "data", "builtin", "alanine-dipeptide-400K.h5")
    with open(src, "rb") as handle:
        assert s.data.save_upload("ala.h5", handle.read(), directory=str(tmp_path))
    assert s.data.dataset.n_atoms == 22 and not s.data.error


def test_simulation_starts_by_itself_when_training_finishes():
    pytest.importorskip("latentlab.training")
    s = Session("three-atom")
    s.simulation.n_walkers = 64
    s.train.epochs = 1
    s.train.start(blocking=True)
    assert s.simulation.running
    s.simulation.pause()
    assert not s.simulation.running
    s.train.use_exact()  # a new model resets the simulation (its sampler held the old V)
    assert s.simulation.sampler is None
