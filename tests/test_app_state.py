"""Dashboard logic without a browser: the job queue, the param state of latentlab_app.state, the live kinetics, the views.

Training, simulations and consistency checks run in worker processes (latentlab_app.jobs); the
tests share one queue of two workers.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("param")

from conftest import wait_until  # noqa: E402
from latentlab.maps import spec_for_atoms  # noqa: E402
from latentlab_app.jobs import JobQueue  # noqa: E402
from latentlab_app.state import Session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("model_dir")  # model and flow files stay in the test's folder
QUEUE_WORKERS = 2  # of the module's job queue (the fixture ``queue``)


@pytest.fixture(scope="module")
def three_atom(queue):
    return Session("three-atom", queue=queue)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "State:\tZ" not in handle.read()
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------- the job queue
def test_import_latentlab_does_not_import_panel():
    code = "import sys, latentlab, latentlab.reconstruct, latentlab.cli.serve; print('panel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_queue_runs_at_most_its_workers_and_tells_waiting_jobs_their_place(queue):
    events = []
    jobs = [queue.submit("probe", {"seconds": 30.0, "interval": 0.05}, owner=f"s{i}",
                         on_event=lambda job, kind, data: events.append((job.id, data["pid"]))) for i in range(4)]
    assert wait_until(lambda: sum(j.state == "running" for j in jobs) == 2, 30)
    assert [j.position() for j in jobs[2:]] == [1, 2]
    assert wait_until(lambda: len({pid for _, pid in events}) == 2, 30)  # two processes, one per running job
    assert {pid for _, pid in events} != {os.getpid()}
    t0 = time.monotonic()
    jobs[0].stop()
    assert jobs[0].wait(2.0) and time.monotonic() - t0 < 1.0, "a running job did not stop within a second"
    assert jobs[0].state == "stopped"
    assert wait_until(lambda: not alive(jobs[0].result["pid"]), 3)  # the process ended: its memory is returned
    assert wait_until(lambda: jobs[2].state == "running", 10) and jobs[3].position() == 1
    jobs[3].stop()  # a queued job is cancelled at once
    assert jobs[3].state == "cancelled" and jobs[3].wait(0)
    for job in jobs[1:3]:
        job.stop()
        assert job.wait(3.0)


def test_worker_that_ignores_stop_is_terminated_and_a_crash_is_a_message(queue):
    job = queue.submit("probe", {"seconds": 60.0, "ignore_stop": True})
    assert wait_until(lambda: job.state == "running", 20)
    time.sleep(0.3)
    t0 = time.monotonic()
    job.stop()
    assert job.wait(queue.stop_grace + 2.0) and job.state == "stopped"
    assert time.monotonic() - t0 < queue.stop_grace + 1.5
    crash = queue.submit("probe", {"seconds": 5.0, "crash": True})
    assert crash.wait(20) and crash.state == "failed" and "exit code 3" in crash.error
    bad = queue.submit("probe", {"seconds": 5.0, "fail": "bad input. Fix: better input"})
    assert bad.wait(20) and bad.state == "failed" and bad.error == "bad input. Fix: better input"


def test_forward_mode_ad_works_in_jobs_running_at_once(queue):
    """Issue 10 item 8: forward-mode AD state is per process; two jobs at once must not see each other's."""
    jobs = [queue.submit("probe", {"seconds": 0.5}) for _ in range(2)]
    assert all(j.wait(30) for j in jobs)
    assert [j.result["forward_ad"] for j in jobs] == [True, True]
    assert jobs[0].result["pid"] != jobs[1].result["pid"]


def test_serve_refuses_a_bad_data_file_before_the_server_starts(tmp_path):
    bad = tmp_path / "text.h5"
    bad.write_text("hello")
    out = subprocess.run([sys.executable, "-m", "latentlab.cli", "serve", "--data", str(bad), "--port", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "latentlab serve: error:" in out.stderr and "Fix:" in out.stderr
    assert "dashboard:" not in out.stdout and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- data, atoms, map
def test_default_session_opens_chignolin_or_says_why_not(queue):
    s = Session(queue=queue)
    if os.path.exists(os.path.join(ROOT, "latentlab", "data", "builtin", "chignolin.h5")):
        assert s.data.dataset.name == "chignolin"
        assert s.map.spec == "triangle:name CA and (resid 0 5 9)"
        assert s.map.cg_map.names == ["r1", "r2", "cos"]
    else:
        assert "chignolin" in s.data.message and "alanine-dipeptide" in s.data.message
        assert s.data.dataset.name == "alanine-dipeptide"
    assert not s.data.error


def test_bad_selection_bad_map_and_unreadable_file_become_messages(tmp_path, queue):
    s = Session("alanine-dipeptide", queue=queue)
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


def test_clicks_toggle_atoms_and_build_maps_of_each_kind(queue):
    s = Session("alanine-dipeptide", queue=queue)
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
    assert s.data.atom_labels([8]) == ["8: ALA2 CA"]


def test_consistency_check_runs_in_a_worker_with_the_library_defaults(three_atom):
    s = three_atom
    s.map.use_default()
    assert s.map.check(blocking=True)
    assert not s.map.checking and not s.map.error, s.map.error
    assert s.map.report["verdict"] == "consistent"
    assert s.map.closed_form["available"] and s.map.closed_form["max_relative_difference"] < 1e-10
    assert len(s.map.spread["edges"]) == 2


def test_sessions_have_independent_state_and_model_files(queue):
    a, b = Session("three-atom", queue=queue), Session("three-atom", queue=queue)
    a.atoms.toggle(0)
    a.map.build("distances:0-1")
    assert b.map.spec == "triangle:0,1,2" and a.atoms.picked != b.atoms.picked
    assert a.id != b.id and a.train.path != b.train.path and a.id in a.train.path


def test_uploaded_file_is_loaded_or_refused_with_a_message_and_removed_on_close(tmp_path, queue):
    s = Session("three-atom", queue=queue)
    assert not s.data.save_upload("junk.h5", b"\x00not a data set", directory=str(tmp_path))
    assert "cannot load" in s.data.error and s.data.dataset.name == "three-atom"
    src = os.path.join(ROOT, "latentlab", "data", "builtin", "alanine-dipeptide-400K.h5")
    with open(src, "rb") as handle:
        assert s.data.save_upload("ala.h5", handle.read())
    assert s.data.dataset.n_atoms == 22 and not s.data.error
    upload_dir = s.data.upload_dirs[0]
    s.close()
    assert not os.path.exists(upload_dir)


def test_a_data_set_without_a_default_map_opens_on_the_suggested_one(tmp_path, queue):
    """A user's peptide file that names no map opens on its phi/psi, not on its first three atoms."""
    from dataclasses import replace

    from latentlab.data import load

    path = replace(load("alanine-dipeptide-400K").select_frames(range(200)), default_map="", name="mine")
    s = Session(path.save(str(tmp_path / "mine.h5")), queue=queue)
    assert not s.data.error and s.map.spec == "dihedrals:phi-psi" and list(s.map.cg_map.names) == ["phi", "psi"]


# ---------------------------------------------------------------------------- training and simulation
@pytest.mark.slow
def test_training_adds_history_saves_loads_and_stops_within_a_second(three_atom):
    t = three_atom.train
    three_atom.simulation.after_training = False  # keep the CPU for the test (auto-start is tested below)
    t.epochs = 2
    assert t.start(blocking=True)
    assert not t.running and not t.error, t.error
    epochs = [h["epoch"] for h in t.history]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2  # one entry per epoch, no batch events
    refit = sum(h["phase"] == "refit" for h in t.history)  # the status counts the refit apart from the 2 asked for
    assert t.status.startswith(f"finished after {len(epochs) - refit} epoch"), t.status
    assert (f"+ {refit} refitting on all frames" in t.status) == (refit > 0), t.status
    assert t.parity and len(t.parity["target"]) == len(t.parity["predicted"])
    assert t.save() and os.path.exists(t.path) and three_atom.id in t.path
    assert not t.save() and "exists" in t.error  # never overwritten silently
    assert t.save(overwrite=True) and t.load() and "loaded" in t.model_label
    t.epochs = 10000
    assert t.start()
    assert wait_until(lambda: len(t.history) >= 1, 120)
    t0 = time.perf_counter()
    t.stop()
    t.wait(10)
    assert time.perf_counter() - t0 < 1.0 and not t.running
    assert t.status.startswith("stopped"), t.status


@pytest.mark.slow
def test_a_temperature_the_trained_v_does_not_hold_at_is_shown_with_the_run(queue):
    s = Session("three-atom", queue=queue)
    s.simulation.after_training = False
    s.train.epochs = 1
    assert s.train.start(blocking=True), s.train.error
    sim = s.simulation
    sim.param.update(n_walkers=16, temperature=600.0)
    assert sim.start(), sim.error
    assert wait_until(lambda: (sim.snapshot() or {}).get("n_samples", 0) > 0, 60), sim.error
    sim.pause()
    assert any("learned at 300 K" in p for p in sim.snapshot()["problems"])


@pytest.mark.slow
def test_simulation_fills_histograms_pauses_within_a_second_resumes_and_resets(three_atom):
    s = three_atom
    assert s.train.use_exact()
    sim = s.simulation
    sim.reset()
    sim.n_walkers = 256
    assert sim.start(), sim.error
    assert wait_until(lambda: (sim.snapshot() or {}).get("n_samples", 0) > 0, 60), sim.error
    t0 = time.perf_counter()
    sim.pause()
    assert time.perf_counter() - t0 < 1.0 and not sim.running and sim.status == "paused"
    snap = sim.snapshot()
    assert snap["n_samples"] > 0 and snap["names"] == ["r1", "r2", "cos"]
    for edges, ref, model in zip(snap["edges"], snap["reference"], snap["model"]):
        assert len(ref) == len(model) == len(edges) - 1
        assert np.isclose((np.asarray(model) * np.diff(edges)).sum(), 1.0)
    time.sleep(0.5)
    assert sim.snapshot()["n_samples"] == snap["n_samples"]
    assert snap["kinetic"].shape[1] == 2 and snap["reseeded"] == 0
    x = s.reconstruct.current()
    assert x.shape == (3, 3) and "reference frame" in s.reconstruct.info
    assert s.reconstruct.at(0).shape == (3, 3)
    assert sim.start()  # resumes: same walkers, same histograms, time goes on
    assert wait_until(lambda: (sim.snapshot() or {}).get("n_samples", 0) > snap["n_samples"], 60)
    sim.pause()
    later = sim.snapshot()
    assert later["time"] > snap["time"] and later["records"] > snap["records"]
    assert s.kinetics.reference and "no time axis" in s.kinetics.reference["error"]  # analytic samples: no kinetics
    assert "independent configurations" in s.kinetics.reference["error"]  # what it means, not only what is missing
    sim.reset()
    assert sim.snapshot()["n_samples"] == 0 and sim.resume is None


def test_simulation_runs_brownian_dynamics_with_atomic_friction_when_asked(queue):
    s = Session("three-atom", queue=queue)
    assert s.train.use_exact()
    sim = s.simulation
    sim.param.update(n_walkers=64, dynamics="brownian", friction_model="atomic", gamma=50.0)
    assert sim.start(), sim.error
    assert wait_until(lambda: (sim.snapshot() or {}).get("n_samples", 0) > 0, 60), sim.error
    sim.pause()
    assert (sim.setup["dynamics"], sim.setup["friction_model"], sim.setup["gamma"]) == ("brownian", "atomic", 50.0)
    assert sim.resume["dynamics"] == "brownian" and sim.snapshot()["reseeded"] == 0


def test_simulation_and_calibration_without_model_or_time_axis_explain_themselves(queue):
    s = Session("alanine-dipeptide", queue=queue)
    assert not s.simulation.start()
    assert "no model" in s.simulation.error
    assert not s.train.use_exact() and "no exact PMF" in s.train.error
    if s.kinetics.available():
        assert not s.kinetics.calibrate() and "no model" in s.kinetics.error
        t = Session("three-atom", queue=queue)
        assert t.train.use_exact() and t.kinetics.calibrate(blocking=True)
        assert not t.kinetics.calibrating and "no time axis" in t.kinetics.error  # a message, not a dead session
        assert "independent configurations" in t.kinetics.error


def test_calibration_job_carries_the_chosen_dynamics_and_friction_model(queue):
    t = Session("three-atom", queue=queue)
    assert t.train.use_exact()
    sent = []
    t.kinetics.submit = lambda kind, payload, **kw: sent.append((kind, payload))
    t.kinetics.param.update(dynamics="brownian", friction_model="atomic")
    assert t.kinetics.calibrate()
    assert sent[0][0] == "calibrate"
    assert (sent[0][1]["dynamics"], sent[0][1]["friction_model"]) == ("brownian", "atomic")
    with pytest.raises(ValueError):
        t.kinetics.dynamics = "verlet"


@pytest.mark.slow
def test_simulation_starts_by_itself_when_training_finishes(queue):
    s = Session("three-atom", queue=queue)
    s.simulation.n_walkers = 64
    s.train.epochs = 1
    s.train.start(blocking=True)
    assert s.simulation.running and not s.train.error
    assert wait_until(lambda: s.simulation.job is not None and s.simulation.job.state == "running", 60)
    s.simulation.pause()
    assert not s.simulation.running
    job = s.simulation.job
    s.train.use_exact()  # a new model resets the simulation (its worker held the old V)
    assert s.simulation.resume is None and job.wait(5)


@pytest.mark.slow
def test_three_sessions_two_trainings_and_a_simulation_at_once_keep_their_own_results(queue):
    """Issue 10 item 8 without a browser: threads of one process broke each other; worker processes do not."""
    sessions = [Session("three-atom", queue=queue) for _ in range(3)]
    for s, seed in zip(sessions[:2], (1, 2)):
        s.simulation.after_training = False
        s.train.param.update(epochs=2, seed=seed)
    sessions[2].train.use_exact()
    sessions[2].simulation.n_walkers = 128
    t0 = time.monotonic()
    assert sessions[0].train.start() and sessions[1].train.start() and sessions[2].simulation.start()
    assert time.monotonic() - t0 < 1.0
    assert sessions[1].train.waiting_text() == "" or "place" in sessions[1].train.waiting_text()
    assert wait_until(lambda: not sessions[0].train.running and not sessions[1].train.running, 240)
    assert wait_until(lambda: (sessions[2].simulation.snapshot() or {}).get("n_samples", 0) > 0, 120)
    sessions[2].simulation.pause()
    for s in sessions:
        assert not s.train.error and not s.simulation.error, (s.train.error, s.simulation.error)
    a, b = (s.train for s in sessions[:2])
    assert a.model is not None and b.model is not None and a.model is not b.model
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]  # their own seeds, their own runs
    assert a.model.training["settings"]["seed"] == 1 and b.model.training["settings"]["seed"] == 2
    assert sessions[2].train.model.kind == "exact" and sessions[2].simulation.snapshot()["n_samples"] > 0


def test_closed_session_stops_its_work_within_five_seconds(queue):
    s = Session("three-atom", queue=queue)
    assert s.train.use_exact()
    assert s.simulation.start()
    assert wait_until(lambda: s.simulation.job.state == "running" and s.simulation.latest is not None, 60)
    pid = s.simulation.job.pid
    t0 = time.monotonic()
    s.close()
    assert s.simulation.job.wait(5.0) and time.monotonic() - t0 < 5.0
    assert not s.jobs()
    assert wait_until(lambda: not alive(pid), 3)  # the worker process is gone: its memory is returned


def test_time_slices_give_waiting_sessions_a_turn():
    q = JobQueue(workers=1, time_slice=1.0)
    try:
        a, b = Session("three-atom", queue=q), Session("three-atom", queue=q)
        for s in (a, b):
            assert s.train.use_exact()
            s.simulation.n_walkers = 32
            assert s.simulation.start()
        assert wait_until(lambda: (b.simulation.snapshot() or {}).get("n_samples", 0) > 0, 60), "b never got a turn"
        assert wait_until(lambda: a.simulation.resume is not None, 30)  # a was paused for b and keeps its state
        assert a.simulation.running  # queued again, to continue
    finally:
        q.shutdown()


# ---------------------------------------------------------------------------- live kinetics (worker side)
def test_record_interval_divides_the_reference_spacing():
    from latentlab_app.live_kinetics import record_interval

    assert record_interval(0.002, 0.5) == 50 and 250 % 50 == 0  # chignolin: 0.1 ps
    assert record_interval(0.002, 8.0) == 50  # alanine dipeptide
    assert record_interval(0.003, 0.5) == 33  # 0.5 / 0.003 is not whole: about 0.1 ps
    assert record_interval(0.002, None) == 50
    assert 375 % record_interval(0.004, 1.5) == 0


class _FakeSimulation:
    """What LiveKinetics reads of a Simulation: state.step and state.Q."""

    def __init__(self, n_walkers):
        import torch

        self.state = type("State", (), {})()
        self.state.step, self.state.Q = 0, torch.zeros(n_walkers, 1, dtype=torch.float64)


@pytest.mark.slow
def test_live_kinetics_measures_the_exact_tau_int_of_an_ornstein_uhlenbeck_process():
    """AR(1) walkers with rho(t) = exp(-t / tau): tau_int (at the reference's spacing) within 4 standard errors."""
    import torch

    from latentlab.kinetics import Trajectories
    from latentlab_app.live_kinetics import LiveKinetics, reference_kinetics

    tau, dt, ref_dt = 1.0, 0.02, 0.2
    rng = np.random.default_rng(7)
    ref = np.zeros(20000)
    a = np.exp(-ref_dt / tau)
    for i in range(1, len(ref)):
        ref[i] = a * ref[i - 1] + np.sqrt(1 - a * a) * rng.normal()
    reference = reference_kinetics(Trajectories.from_arrays(ref[:, None], ref_dt, names=["x"]))
    assert "error" not in reference, reference.get("error")
    kin = LiveKinetics(dt, ["x"], [False], ["nm"], ref_dt, walkers=64, max_frames=40000)
    kin.reference = reference
    assert kin.interval * dt == pytest.approx(0.02 * round(0.1 / 0.02))  # 0.1 ps, a divisor of 0.2 ps
    sim = _FakeSimulation(64)
    b = np.exp(-dt / tau)
    q = rng.normal(size=64)
    for step in range(1, 12001):
        q = b * q + np.sqrt(1 - b * b) * rng.normal(size=64)
        if step % kin.interval == 0:
            sim.state.step, sim.state.Q = step, torch.as_tensor(q[:, None])
            kin.report(sim)
    # bounded: respaced to the reference's spacing, then fewer (longer) walkers
    assert len(kin.records) * kin.walkers <= 40000 + 64 and kin.spacing_ps == pytest.approx(0.2) and kin.walkers < 64
    out = kin.analyse()
    assert out["analysis_dt_ps"] == pytest.approx(ref_dt)
    exact = (ref_dt / 2) / np.tanh(ref_dt / (2 * tau))  # the trapezoidal sum of exp(-t/tau) at this spacing
    model_tau = out["tau_int_ps"]["x"]
    ref_tau, ref_err = reference["summary"]["tau_int_ps"]["x"], reference["summary"]["tau_int_stderr_ps"]["x"]
    assert abs(ref_tau - exact) < 4 * ref_err
    assert abs(model_tau - exact) < 4 * out["tau_int_stderr_ps"]["x"]
    assert out["acf"]["lags_ps"][0] == 0 and len(out["acf"]["x"]) == len(out["acf"]["lags_ps"])


# ---------------------------------------------------------------------------- views
def test_dashboard_views_refresh_from_state(queue):
    pn = pytest.importorskip("panel")
    from latentlab_app.views import Dashboard

    dash = Dashboard("three-atom", queue=queue)
    dash.tabs.active = 3  # only the visible tab is redrawn
    dash.s.train.use_exact()
    dash.s.simulation.n_walkers = 64
    dash.s.simulation.start()
    assert wait_until(lambda: (dash.s.simulation.snapshot() or {}).get("n_samples", 0) > 0, 60)
    dash.tick()
    dash.s.simulation.pause()
    dash.tick()
    assert sum(float(np.sum(src.data["model"])) for src in dash.simulate.hist_srcs) > 0
    assert "samples" in dash.simulate.stats.object
    kin = dash.simulate.kinetics
    assert "Kinetics" in kin.header.object
    assert kin.calibrate.disabled is not dash.s.kinetics.available()  # a model is there: calibration can start
    dash.structure.ngl.picked_event = [1, 123]
    assert dash.s.atoms.picked.count(1) <= 1
    dash.tabs.active = 2
    dash.s.train.error = "a message"
    dash.tick()
    assert dash.train.error.visible and "a message" in dash.train.error.object
    assert isinstance(dash.__panel__(), pn.Column)
    dash.close()
    assert not dash.s.jobs()
