"""Effective-mass models, the Simulation facade and its reporters, SIM files, model files and the simulate CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.func import jacfwd, vmap

from latentlab.data import load
from latentlab.kinetics import Trajectories
from latentlab.dynamics import mean_and_stderr
from latentlab.maps.mass_model import KernelMass, TriangleMass, build_mass_model, mass_model_from_dict
from latentlab.model import CGModel
from latentlab.simulation import (CallbackReporter, HistogramReporter, SimFileReporter, Simulation,
                                  TrajectoryReporter, auto_gamma, load_simulation, save_simulation)
from latentlab.training import Trainer


def mass_function(cg_map, data, **kwargs):
    return build_mass_model(cg_map, data.positions, data.masses, **kwargs)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def three_atom_model():
    data = load("three-atom", n=20000, seed=3)
    # no data-support prior: exact iid samples fill their range, and the sampler runs ~3x faster without it
    return Trainer(epochs=25, seed=0, device="cpu", patience=0, support_prior=False).fit(data)


def _kernel(periodic=(True, False)):
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 4 - 2
    a = torch.randn(30, 2, 2, generator=gen, dtype=torch.float64)
    values = a @ a.transpose(1, 2) + 0.5 * torch.eye(2, dtype=torch.float64)
    counts = torch.randint(1, 50, (30,), generator=gen).double()
    return KernelMass(centres, values, counts, torch.tensor([0.4, 0.3], dtype=torch.float64), list(periodic))


def test_library_mass_models_take_periodic_coordinates_unwrapped():
    """The sampler skips wrapping before each lookup of A for models marked periodic_safe: theirs must not care."""
    from latentlab.maps.mass_model import tabulate_mass

    kernel = _kernel(periodic=(True, True))
    grid = tabulate_mass(kernel, n_points=64)
    assert kernel.periodic_safe and grid.periodic_safe
    q = torch.rand(50, 2, dtype=torch.float64) * 6 - 3
    for mass in (kernel, grid):
        for shift in (2 * math.pi, -4 * math.pi):
            torch.testing.assert_close(mass(q + shift), mass(q), rtol=1e-10, atol=1e-12)


def test_kernel_mass_forward_and_reverse_derivatives_match_plain_autodiff():
    mass = _kernel()
    q = torch.randn(17, 2, dtype=torch.float64)
    assert torch.allclose(mass(q), mass.reference(q))
    exact = vmap(jacfwd(lambda x: mass.reference(x[None])[0]))(q)  # (W, N, N, N)
    import torch.autograd.forward_ad as fwAD

    for d in range(2):
        tangent = torch.zeros_like(q)
        tangent[:, d] = 1.0
        with fwAD.dual_level():
            out = fwAD.unpack_dual(mass(fwAD.make_dual(q, tangent))).tangent
        assert torch.allclose(out, exact[..., d], atol=1e-12)
    qr = q.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(torch.logdet(mass(qr)).sum(), qr)
    (g2,) = torch.autograd.grad(torch.logdet(mass.reference(qr)).sum(), qr)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_kernel_mass_is_positive_definite_periodic_and_finite_far_from_data():
    mass = _kernel()
    q = torch.tensor([[0.3, 0.1], [0.3 + 2 * np.pi, 0.1], [50.0, -80.0]], dtype=torch.float64)
    a = mass(q)
    assert torch.isfinite(a).all() and bool((torch.linalg.eigvalsh(a) > 0).all())
    assert torch.allclose(a[0], a[1])


def test_kernel_table_of_a_linear_map_reproduces_its_constant_mass():
    from latentlab.maps import parse_map

    data = load("three-atom", n=2000, seed=0)
    cg_map = parse_map("linear:1", n_atoms=3)  # Cartesian position of the vertex atom: A = I / m_b
    closed = mass_function(cg_map, data, consistency=False)
    kernel = mass_function(cg_map, data, kind="kernel", consistency=False, tabulate=False)
    assert closed.kind == "constant" and kernel.kind == "kernel"
    q = cg_map(torch.as_tensor(data.positions[:50], dtype=torch.float64)) + 0.01
    expected = torch.eye(3, dtype=torch.float64) / data.masses[1]
    assert torch.allclose(kernel(q), expected.expand(50, 3, 3), rtol=1e-5)
    assert torch.allclose(closed(q), expected.expand(50, 3, 3))


def test_triangle_map_gets_the_closed_form_mass_and_it_round_trips_through_a_dict():
    data = load("three-atom", n=500, seed=0)
    mass = mass_function(data.map(), data)
    assert isinstance(mass, TriangleMass) and mass.consistency["verdict"] == "consistent"
    from latentlab.maps import effective_mass

    x = torch.as_tensor(data.positions[:20], dtype=torch.float64)
    q = data.map()(x)
    assert torch.allclose(mass(q), effective_mass(data.map(), x, data.masses), rtol=1e-5, atol=1e-6)
    again = mass_model_from_dict(mass.to_dict())
    assert torch.equal(again(q), mass(q)) and again.consistency == mass.consistency


def test_alanine_phi_psi_mass_comes_from_data_with_a_consistency_score_and_is_tabulated():
    data = load("alanine-dipeptide").select_frames(slice(0, 3000))
    mass = mass_function(data.map(), data)
    assert mass.kind == "grid"
    assert mass.consistency["verdict"] == "inconsistent" and 0 < mass.consistency["score"] < 10
    q = torch.tensor([[-1.5, 1.5], [np.pi, -np.pi]], dtype=torch.float64)
    assert torch.allclose(mass(q[1:]), mass(q[1:] + 2 * np.pi))
    # the table is the kernel table to ~1e-5 relative, with exact derivatives of itself
    kernel = mass_function(data.map(), data, consistency=False, tabulate=False)
    q = torch.rand(200, 2, dtype=torch.float64) * 2 * np.pi - np.pi
    rel = torch.linalg.matrix_norm(mass(q) - kernel(q)) / torch.linalg.matrix_norm(kernel(q))
    assert float(rel.max()) < 1e-4
    a, da = mass.value_and_derivative(q)
    eps = 1e-6
    for k in range(2):
        dq = torch.zeros_like(q)
        dq[:, k] = eps
        fd = (mass(q + dq) - mass(q - dq)) / (2 * eps)
        assert torch.allclose(da[..., k], fd, atol=1e-6 * float(a.abs().max()))
    again = mass_model_from_dict(mass.to_dict())
    assert again.kind == "grid" and torch.equal(again(q), mass(q))


def test_triangle_mass_derivative_is_the_closed_form_of_autodiff():
    from latentlab.maps.mass_model import MassModel

    mass = TriangleMass([1 / 12.0, 1 / 14.0, 1 / 16.0])
    q = torch.rand(50, 3, dtype=torch.float64) * torch.tensor([0.2, 0.2, 1.6]) + torch.tensor([0.3, 0.3, -0.8])
    a1, d1 = mass.value_and_derivative(q)
    a2, d2 = MassModel.value_and_derivative(mass, q)  # generic forward-mode AD
    assert torch.equal(a1, a2) and torch.allclose(d1, d2, rtol=1e-12, atol=1e-12)


def test_support_prior_table_matches_the_kernel_and_its_closed_form_gradient(three_atom_model):
    from latentlab.potentials import CGPotential

    torch.manual_seed(0)
    q = torch.randn(4000, 2, dtype=torch.float64) * 0.3
    pot = CGPotential.from_data(q, hidden=(8,), support=True)
    assert pot.support.table is not None
    probe = q[:300] * 1.2  # inside the table's box (the kernel centres +- 3 bandwidths); outside it l is linear
    l_table, l_kernel = pot.support.log_density(probe), pot.support.kernel_log_density(probe)
    assert float((l_table - l_kernel).abs().max()) < 1e-3
    v, g = pot.energy_and_gradient(probe)
    pr = probe.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(pot(pr).sum(), pr)
    assert torch.allclose(v, pot(probe)) and torch.allclose(g, g_auto)


def test_auto_gamma_gives_the_target_friction_rate():
    mass = TriangleMass([1 / 12.0, 1 / 14.0, 1 / 16.0])
    q = torch.tensor([[0.4, 0.4, 0.1]], dtype=torch.float64)
    gamma = auto_gamma(mass, q, rate=10.0)
    w = torch.linalg.eigvalsh(mass(q))
    assert gamma * float(torch.exp(torch.log(w).mean())) == pytest.approx(10.0)
    # atomic friction: every direction relaxes at gamma itself (1/ps), whatever A is
    assert auto_gamma(mass, q, rate=7.0, friction_model="atomic") == 7.0


def test_simulation_starts_from_stored_data_frames_inside_the_bounds(three_atom_model):
    sim = Simulation(three_atom_model, n_walkers=64, seed=1)
    start = three_atom_model.start_points
    assert sim.state.Q.shape == (64, 3)
    dist = torch.cdist(sim.state.Q, start.to(sim.state.Q)).min(1).values
    assert float(dist.max()) < 1e-5
    assert sim.gamma > 0 and sim.state.Q[:, 2].abs().max() < 1
    with pytest.raises(ValueError, match="n_walkers"):
        Simulation(three_atom_model, n_walkers=0)
    with pytest.raises(ValueError, match="gamma"):
        Simulation(three_atom_model, n_walkers=2, gamma="fast")
    with pytest.raises(ValueError, match="start"):
        Simulation(three_atom_model, n_walkers=2, start=torch.zeros(3, 3))


def test_calibrated_friction_is_the_default_and_can_be_overridden(three_atom_model):
    from dataclasses import replace

    calibrated = replace(three_atom_model, friction=7.5)
    assert Simulation(calibrated, n_walkers=2).gamma == 7.5
    assert Simulation(calibrated, n_walkers=2, gamma=3.0).gamma == 3.0
    assert Simulation(three_atom_model, n_walkers=8, gamma="auto").gamma == Simulation(three_atom_model, n_walkers=8).gamma


@pytest.mark.slow
def test_latent_langevin_with_the_learned_v_reproduces_exact_three_atom_moments(three_atom_model):
    from latentlab.testing import ThreeAtomSystem

    exact = ThreeAtomSystem().exact_moments()
    sim = Simulation(three_atom_model, n_walkers=600, dt=0.002, seed=4)
    sim.step(300)  # burn-in (walkers already start from equilibrium data)
    recorder = TrajectoryReporter(5)
    sim.reporters.append(recorder)
    sim.run(1500)
    q = recorder.record()["Q"]  # (T, W, 3)
    checks = {"mean_r1": q[..., 0], "mean_r2": q[..., 1], "var_cos": q[..., 2] ** 2}
    for name, series in checks.items():
        mean, err, _ = mean_and_stderr(series)
        target = exact[name] + (exact["mean_cos"] ** 2 if name == "var_cos" else 0.0)
        # statistical error plus a small allowance for the learned (not exact) V
        assert abs(float(mean) - target) < 4 * float(err) + 0.01 * abs(target), (name, float(mean), target, float(err))


def test_reporters_are_called_on_their_intervals_and_can_stop_the_run(three_atom_model):
    calls = {"a": [], "b": []}
    sim = Simulation(three_atom_model, n_walkers=4, seed=0)
    sim.reporters = [CallbackReporter(lambda s: calls["a"].append(s.step_count), every=3),
                     CallbackReporter(lambda s: calls["b"].append(s.step_count) or s.step_count >= 10, every=5)]
    summary = sim.run(100)
    assert calls["a"] == [3, 6, 9] and calls["b"] == [5, 10]  # stopped at step 10 by the second reporter
    assert summary["steps_done"] == 10 and not summary["interrupted"]
    with pytest.raises(ValueError, match="steps"):
        sim.run(0)


def test_histogram_reporter_fills_the_reference_bins_and_compares_with_the_reference(three_atom_model):
    from latentlab.binning import latent_box, regular_edges

    data = load("three-atom", n=3000, seed=5)
    ref = data.map().map_frames(data.positions).numpy()
    lo, hi = latent_box(ref, three_atom_model.periodic, three_atom_model.bounds, pad=0.05)
    hist = HistogramReporter(ref, regular_edges(lo, hi, 30), three_atom_model.periodic, every=2, burn_in_records=2,
                             js_every=0.0)
    sim = Simulation(three_atom_model, n_walkers=256, seed=2, reporters=[hist])
    sim.run(60)
    snap = hist.snapshot()
    assert snap["records"] == 30 and snap["n_samples"] == 28 * 256
    for e, dens in zip(snap["edges"], snap["model"]):
        assert np.sum(dens * np.diff(e)) == pytest.approx(1.0, abs=0.02)  # almost nothing outside the box
    latest = snap["js_latest"]
    assert latest["js_divergence"] > 0 and latest["js_noise_floor"] > 0 and snap["traces"].shape[1:] == (4, 3)


def test_unhealthy_runs_say_what_is_wrong_and_how_to_fix_it(three_atom_model):
    sim = Simulation(three_atom_model, n_walkers=64, dt=0.002, seed=0)
    sim.run(20)
    assert sim.problems() == []
    bad = Simulation(three_atom_model, n_walkers=64, dt=0.15, seed=0)
    bad.run(40)
    problems = bad.problems()
    assert problems and all("Fix: use --dt" in p for p in problems)


def test_the_kinetic_temperature_is_judged_only_on_what_the_run_can_know(three_atom_model):
    """A run shorter than the friction's momentum relaxation holds few independent kinetic temperatures: a 10 %
    deviation of 60 steps of 128 walkers is noise (a false alarm before), the same deviation held for 20,000
    steps is not."""
    from array import array

    sim = Simulation(three_atom_model, n_walkers=128, dt=0.002, seed=0)
    sim.run(60)
    rng = np.random.default_rng(0)
    sim._kinetic = array("d", 0.9 + 0.002 * rng.standard_normal(60))  # steady, so its own error estimate is tiny
    one_value = math.sqrt(2.0 / (3 * 128))  # the equipartition spread of the walker mean
    assert sim.kinetic_temperature_error() == pytest.approx(one_value, rel=1e-6)  # fewer steps than one renewal
    assert sim.problems() == []
    sim._kinetic = array("d", 0.9 + 0.002 * rng.standard_normal(20000))
    assert sim.kinetic_temperature_error() < 0.02
    assert any("kinetic temperature is 0.900" in p for p in sim.problems())


def test_sim_file_round_trip_and_foreign_files(tmp_path):
    path = str(tmp_path / "sim.npz")
    q = np.random.default_rng(0).normal(size=(4, 3, 2))
    save_simulation(path, q, np.arange(4) * 0.02, {"map": "dihedrals:phi-psi", "names": ["phi", "psi"]})
    sim = load_simulation(path)
    assert np.allclose(sim["Q"], q.astype(np.float32)) and sim["metadata"]["map"] == "dihedrals:phi-psi"
    np.savez(str(tmp_path / "other.npz"), Q=q)
    with pytest.raises(ValueError, match="simulation"):
        load_simulation(str(tmp_path / "other.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="simulation"):
        load_simulation(str(tmp_path / "junk.npz"))
    with pytest.raises(FileNotFoundError):
        load_simulation(str(tmp_path / "missing.npz"))
    old = load_simulation(os.path.join(ROOT, "tests", "data", "sim-0.1.0-three-atom.npz"))  # written by 0.1.0
    assert old["Q"].shape == (2, 8, 3) and old["metadata"]["map"] == "triangle:0,1,2"


def test_sim_file_reporter_writes_records_and_diagnostics(three_atom_model, tmp_path):
    out = str(tmp_path / "sim.npz")
    sim = Simulation(three_atom_model, n_walkers=16, seed=0, reporters=[SimFileReporter(out, every=10)])
    sim.run(40)
    data = load_simulation(out)
    assert data["Q"].shape == (4, 16, 3) and np.allclose(data["time"], [0.02, 0.04, 0.06, 0.08])
    meta = data["metadata"]
    assert meta["steps_done"] == 40 and not meta["interrupted"] and meta["map"] == "triangle:0,1,2"
    assert meta["mass_model"]["kind"] == "triangle" and "kinetic_temperature_ratio" in meta["diagnostics"]
    assert meta["record_every"] == 10 and meta["diagnostics"]["reseeded_fraction"] == 0.0
    assert data["kinetic_temperature_ratio"].shape == (4,)
    # the kinetics tools read what the reporter wrote: the training-data record becomes its name
    assert meta["dataset"]["name"] == "three-atom"
    tr = Trajectories.from_simulation(out)
    assert tr.dataset == "three-atom" and tr.names == ["r1", "r2", "cos"] and tr.n_trajectories == 16


def test_kinetics_and_compare_cli_read_a_sim_file_written_by_simulate(three_atom_model, tmp_path, capsys):
    """The README's loop ends in ``latentlab kinetics SIM --reference DATA``: the SIM's metadata (with the
    model's training-data record) must pass through the basin look-up and the analysis."""
    from latentlab.cli import main

    model, out = str(tmp_path / "m.pt"), str(tmp_path / "sim.npz")
    three_atom_model.save(model)
    assert main(["simulate", model, "--walkers", "8", "--steps", "200", "--record-every", "2", "--out", out,
                 "--json", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["kinetics", out, "--json", "--samples", "5", "--clusters", "4"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dataset"] == "three-atom" and d["map"] == "triangle:0,1,2"
    # a reference of another system is refused by name, not by a shape error deep inside the map
    assert main(["compare", out, "--reference", "chignolin", "--against", "all"]) == 2
    assert "chignolin has 10 atoms but" in capsys.readouterr().err


def test_model_files_of_version_0_1_0_still_load_and_give_the_same_v():
    import json

    expected = json.load(open(os.path.join(ROOT, "tests", "data", "model-0.1.0-expected.json")))
    for key in ("three-atom", "alanine"):
        model = CGModel.load(os.path.join(ROOT, "tests", "data", f"model-0.1.0-{key}.pt"))
        q = torch.tensor(expected[key]["Q"], dtype=torch.float64)
        assert torch.allclose(model.energy(q), torch.tensor(expected[key]["V"], dtype=torch.float64), rtol=1e-12)
        assert model.kind == "force-matching" and model.start_points.shape[1] == q.shape[1]
    assert model.training["method"] == "rigid-rotation" and model.mass.kind == "kernel" and model.periodic == [True, True]


def test_model_file_round_trip_and_clear_errors(three_atom_model, tmp_path):
    path = str(tmp_path / "m.pt")
    three_atom_model.save(path)
    again = CGModel.load(path)
    q = three_atom_model.start_points[:20]
    assert torch.equal(again.energy(q), three_atom_model.energy(q))
    assert again.describe()["kind"] == "force-matching" and again.coordinates == three_atom_model.coordinates
    with pytest.raises(FileNotFoundError):
        CGModel.load(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a latentlab model file"):
        CGModel.load(str(tmp_path / "junk.pt"))
    payload = three_atom_model.to_payload()
    torch.save({**payload, "format_version": 99}, str(tmp_path / "future.pt"))
    with pytest.raises(ValueError, match="format version 99.*upgrade latentlab"):
        CGModel.load(str(tmp_path / "future.pt"))


def test_exact_model_of_the_three_atom_system_round_trips_and_follows_the_temperature(tmp_path):
    from latentlab.testing import ThreeAtomSystem

    model = ThreeAtomSystem().cg_model("eq9")
    path = str(tmp_path / "exact.pt")
    model.save(path)
    again = CGModel.load(path)
    q = ThreeAtomSystem().sample_cg(5, seed=1)
    assert again.convention == "eq9" and torch.allclose(again.energy(q), model.energy(q))
    hot = ThreeAtomSystem(temperature=400.0).cg_model("eq9")
    assert torch.allclose(model.energy(q, temperature=400.0), hot.energy(q))


def test_model_and_simulation_print_as_one_readable_line(three_atom_model):
    """In a notebook, ``model`` and ``sim`` show what they are, not the training history and start points."""
    text = repr(three_atom_model)
    assert "\n" not in text and len(text) < 250 and "history" not in text and "tensor" not in text
    assert text.startswith("CGModel(force-matching, map triangle:0,1,2: r1 (nm), r2 (nm), cos; A(Q) triangle, 300 K")
    sim = Simulation(three_atom_model, n_walkers=4, seed=0, gamma=50.0)
    assert repr(sim).startswith("Simulation(4 walkers, langevin with coordinate friction 50 amu/ps, dt ")
    assert repr(sim).endswith(f"; {text})") and "\n" not in repr(sim)


@pytest.mark.slow
def test_simulate_cli_saves_what_was_done_on_ctrl_c(three_atom_model, tmp_path):
    model_path = str(tmp_path / "m.pt")
    three_atom_model.save(model_path)
    out = str(tmp_path / "sim.npz")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "latentlab.cli", "simulate", model_path, "--walkers", "8",
                             "--steps", "10000000", "--record-every", "5", "--out", out, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, log
    sim = load_simulation(out)
    assert sim["metadata"]["interrupted"] and sim["Q"].shape[0] > 0
    assert sim["metadata"]["steps_done"] >= 5 * sim["Q"].shape[0]


def test_an_unhealthy_run_fails_keeps_its_file_and_compare_refuses_it_unless_told(tmp_path, capsys):
    from latentlab.cli import main

    model = os.path.join(ROOT, "tests", "data", "model-0.1.0-three-atom.pt")
    out = str(tmp_path / "blown.npz")
    assert main(["simulate", model, "--walkers", "64", "--steps", "40", "--dt", "0.1", "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "blew up and were re-seeded" in err and "Fix: use --dt 0.025" in err
    assert os.path.exists(out)  # what was done is kept
    ref = str(tmp_path / "ref.h5")
    load("three-atom", n=2000, seed=1).save(ref)
    assert main(["compare", out, "--reference", ref]) == 2
    assert "unhealthy run" in capsys.readouterr().err
    assert main(["compare", out, "--reference", ref, "--ignore-diagnostics", "--json"]) == 0
    result = __import__("json").loads(capsys.readouterr().out)
    assert result["reseeded_fraction"] > 0.01 and result["problems"]


def test_a_temperature_v_does_not_hold_at_is_noted_before_the_run(three_atom_model, tmp_path, capsys):
    """A fixed V is a free energy at its training temperature; a V(Q, T) holds within its trained range."""
    from dataclasses import replace

    from latentlab.cli import main
    from latentlab.testing import ThreeAtomSystem

    m = three_atom_model
    assert m.temperature_note(None) is None and m.temperature_note(m.temperature) is None
    assert m.temperature_note(1.05 * m.temperature) is None
    assert "learned at 300 K" in m.temperature_note(3.0) and "temperature-matching" in m.temperature_note(3.0)
    assert CGModel.exact(ThreeAtomSystem()).temperature_note(3.0) is None  # rebuilt for any temperature
    conditioned = replace(m, temperatures=[300.0, 350.0, 400.0])
    assert conditioned.temperature_note(380.0) is None and "outside that range" in conditioned.temperature_note(500.0)
    assert Simulation(m, n_walkers=4, temperature=600.0, seed=0).notes == [m.temperature_note(600.0)]
    path, out = str(tmp_path / "m.pt"), str(tmp_path / "s.npz")
    m.save(path)
    main(["simulate", path, "--walkers", "4", "--steps", "20", "--temperature", "600", "--out", out, "--json"])
    captured = capsys.readouterr()
    assert "note: V(Q) was learned at 300 K" in captured.err
    assert json.loads(captured.out)["notes"] == [m.temperature_note(600.0)]


def test_the_step_takes_a_tabulated_a_on_the_cells_its_position_solve_found():
    """With a tabulated A the step keeps each walker's table cell from the position solve and takes A and dA/dQ
    at the new position on it (no second cell search): the same as a fresh lookup to round-off, also for the
    walkers that iterated more than once and for positions wrapped across the periodic boundary."""
    from latentlab.dynamics import LatentLangevin
    from latentlab.interpolation import TableCells
    from latentlab.maps.mass_model import tabulate_mass

    grid = tabulate_mass(_kernel(periodic=(True, True)), n_points=64)

    def potential(q):
        return 2.5 * (1.0 - torch.cos(q)).sum(1)

    sampler = LatentLangevin(potential, grid, kT=2.5, dt=0.015, gamma=2.0, periodic=[True, True], seed=0)
    start = torch.rand(512, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 6.2 - 3.1
    state = sampler.init(start)
    wrapped = 0
    for _ in range(25):
        before = state.Q.clone()
        sampler.step(state, 1)
        wrapped += int(((state.Q - before).abs() > math.pi).any(1).sum())
        a, da = grid.value_and_derivative(state.Q)
        torch.testing.assert_close(state.A, a, rtol=1e-13, atol=1e-13 * float(a.abs().max()))
        # the kept cells' derivative error in the channels (ln L_ii, L_ij) is at most DERIVATIVE_ERROR; in
        # dA = dL L^T + L dL^T that is at most 2 N |L|^2 <= 2 N max |A_ii| times it
        bound = 2 * 2 * TableCells.DERIVATIVE_ERROR * float(a.diagonal(dim1=1, dim2=2).max())
        torch.testing.assert_close(state.dA, da, rtol=1e-13, atol=bound + 1e-13 * float(da.abs().max()))
    assert wrapped > 0
    assert sampler.diagnostics(state)["reseeded"] == 0
