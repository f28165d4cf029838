"""The dashboard's Flow tab without a browser: live training in a worker process, stop, samples, populations,
save/load, structures through the flow, and the pane drawing the state."""

import time

import numpy as np
import pytest

pytest.importorskip("param")

from conftest import wait_until  # noqa: E402
from latentlab_app.state import Session  # noqa: E402
from latentlab_app.state.flow import flow_state  # noqa: E402


pytestmark = pytest.mark.usefixtures("model_dir")  # model and flow files stay in the test's folder


@pytest.fixture(scope="module")
def trained(queue):
    """A short double-well training run in the queue (linear tempering, 3 stages)."""
    session = Session("three-atom", queue=queue)
    f = flow_state(session)
    f.param.update(system="double-well", initial_steps=150, steps=30, batch=128, tempering="linear", n_samples=4000)
    assert f.start()
    assert f.running and f.status == "queued"
    assert wait_until(lambda: not f.running, 300)
    return session, f


def test_flow_training_streams_beta_ess_and_loss_and_ends_with_a_flow(trained):
    session, f = trained
    assert f.error == "" and f.trained is not None and f.trained.system.name == "double-well"
    assert len(f.progress) >= 10  # live points every 10 steps
    steps = [p["step"] for p in f.progress]
    assert steps == sorted(steps) and all(np.isfinite(p["loss"]) for p in f.progress)
    betas = [h["beta"] for h in f.history]
    assert betas == sorted(betas) and betas[-1] == pytest.approx(1.0)
    assert f.trained.train["finished"] and "finished" in f.status
    assert session.flow is f  # one flow state per session


def test_samples_give_populations_against_the_exact_values(trained):
    _, f = trained
    assert f.samples is not None and f.samples.n_samples == 4000
    rows = {r["state"]: r for r in f.populations_table()}
    assert set(rows) == {"x1<0", "x1>0"}
    assert rows["x1<0"]["kind"] == "exact" and rows["x1<0"]["target"] == pytest.approx(0.99165, abs=1e-5)
    assert 0 < rows["x1<0"]["stderr"] < 0.05
    pts = f.physical()
    assert pts["names"] == ["x1", "x2"] and np.isclose(pts["w"].sum(), 1.0)
    dens = f.density(bins=40)
    assert dens["kind"] == "exact" and dens["p"].shape == (40, 40) and np.isclose(dens["p"].sum(), 1.0)
    # the exact density has its mode in the left well
    i, _ = np.unravel_index(np.argmax(dens["p"]), dens["p"].shape)
    assert 0.5 * (dens["x_edges"][i] + dens["x_edges"][i + 1]) < 0
    h = f.slow_histogram()
    width = np.diff(h["edges"])
    assert np.sum(h["flow"] * width) == pytest.approx(1.0) and np.sum(h["reweighted"] * width) == pytest.approx(1.0)


def test_flow_is_saved_and_loaded_and_reconstructs_states(trained, tmp_path):
    session, f = trained
    path = str(tmp_path / "flow.pt")
    assert f.save(path) and f.path == path
    assert not f.save(path) and "exists" in f.error  # refused without overwrite
    other = flow_state(Session("three-atom", queue=session.queue))
    assert other.load(path) and other.error == "" and other.report is not None
    x = other.structure([-3.0])
    assert x.shape == (1, 3) and np.isfinite(x).all()
    assert other.structure([99.0]) is None and "outside" in other.error
    assert not other.load(str(tmp_path / "missing.pt")) and "cannot load flow" in other.error


def test_stop_ends_a_flow_training_within_seconds(queue):
    f = flow_state(Session("three-atom", queue=queue))
    f.param.update(system="double-well", initial_steps=100000, batch=64)
    assert f.start()
    assert wait_until(lambda: len(f.progress) > 0, 120)
    t0 = time.monotonic()
    f.stop()
    assert wait_until(lambda: not f.running, 10)
    assert time.monotonic() - t0 < 5
    assert f.trained is None and "stopped" in f.status  # no stage had ended: nothing to keep


def test_flow_pane_draws_the_state(trained):
    pytest.importorskip("panel")
    from latentlab_app.views.flow import FlowPane

    session, f = trained
    f.draw(n=2000)
    pane = FlowPane(session)
    pane.refresh()
    assert len(pane.live_src.data["step"]) == len(f.progress)
    assert len(pane.points_src.data["x"]) > 0 and len(pane.density_src.data["image"]) == 1
    assert "x1<0" in pane.table.object and "exact" in pane.table.object
    assert not pane.structure_box.visible  # the double well is not a molecule
    assert pane.__panel__() is not None
