"""Structured flows: every bijection exact (float64), densities consistent, training resumable, estimates unbiased."""

import math

import numpy as np
import pytest
import torch

from latentlab.flows import (FlowReconstructor, FlowTrainer, TrainSettings, flow_slow_map, get_system, load_flow,
                             make_flow, save_flow, trained_from_trainer)
from latentlab.flows.geometry import RigidFrame, ZMatrixTransform, build_zmatrix, internal_coordinates
from latentlab.flows.model import StructuredFlow
from latentlab.flows.samples import FlowSamples
from latentlab.flows.transforms import (InternalCoordinateTransform, PositiveTransform, PseudoAtomLinear,
                                        SoftmaxLinear, compose)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _check_bijection(transform, x, atol=1e-9):
    """Inverse round trip and ladj == log|det J| of the autograd Jacobian, per sample (float64)."""
    y, ladj = transform.call_and_ladj(x)
    torch.testing.assert_close(transform.inv(y), x, rtol=0, atol=atol)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0], x[i])
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert float(ladj[i].detach()) == pytest.approx(float(logdet), abs=1e-8)
    x_back, ladj_inv = transform.inv.call_and_ladj(y)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def alanine_system():
    return get_system("alanine-dipeptide")


@pytest.fixture(scope="module")
def alanine_frames():
    from latentlab.data import load

    return torch.as_tensor(load("alanine-dipeptide").positions[::2500], dtype=torch.float64)  # 5 frames


# ---------------------------------------------------------------------------- transforms


def test_softmax_linear_round_trip_and_log_det():
    torch.manual_seed(0)
    lin = SoftmaxLinear(torch.randn(5, 5, dtype=torch.float64) + 2 * torch.eye(5, dtype=torch.float64))
    assert torch.allclose(lin.matrix.sum(-1), torch.ones(5, dtype=torch.float64))
    _check_bijection(lin(), torch.randn(4, 5, dtype=torch.float64))


def test_pseudo_atom_map_is_invertible_with_exact_log_det():
    frame = RigidFrame(6, (0, 1, 2))
    torch.set_default_dtype(torch.float64)
    try:
        lin = PseudoAtomLinear(frame, alpha=1.0)
        with torch.no_grad():
            lin.logits.add_(0.3 * torch.randn(lin.logits.shape, generator=torch.Generator().manual_seed(1)))
    finally:
        torch.set_default_dtype(torch.float32)
    a = lin.matrix
    assert a.shape == (12, 12)
    comp = torch.as_tensor([2, 0, 2] + [0, 1, 2] * 3)
    assert torch.all(a[comp[:, None] != comp[None, :]] == 0)  # no mixing across x, y, z
    t = compose(lin(), PositiveTransform([0, 1]))
    _check_bijection(t, torch.randn(3, 12, dtype=torch.float64))


def test_internal_coordinate_transform_round_trip_and_log_det():
    kind = torch.tensor([0, 1, 2, 0, 1, 2])
    center = torch.tensor([0.15, 1.9, -1.2, 0.1, 2.5, 3.0], dtype=torch.float64)
    slope = torch.tensor([0.02, 0.1, 1.0, 0.05, 0.3, 0.1], dtype=torch.float64)
    fold = torch.tensor([1, 1, 1, 1, 1, 3])
    t = InternalCoordinateTransform(kind, center, slope, fold)
    u = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    _check_bijection(t, u)
    y = t(u)
    assert (y[:, [0, 3]] > 0).all() and (y[:, [1, 4]] > 0).all() and (y[:, [1, 4]] < math.pi).all()
    assert ((y[:, 5] - 3.0).abs() < math.pi / 3).all()  # a methyl-rotor torsion stays in its 120-degree window
    big = t(torch.full((1, 6), 1e6, dtype=torch.float64))
    assert float(big[0, 5] - 3.0) == pytest.approx(math.pi / 3, abs=1e-12)
    # another well of the rotor reads as the equivalent torsion in the window (hydrogens relabelled)
    shifted = y.clone()
    shifted[:, 5] += 2 * math.pi / 3
    torch.testing.assert_close(t.inv(shifted), u, rtol=0, atol=1e-8)


def test_methyl_rotors_of_alanine_get_a_third_of_the_circle(alanine_system):
    names = [a.name for a in alanine_system.topology.atoms]
    rotors = alanine_system.symmetric_rotors()
    assert sorted(names[alanine_system.zmatrix.rows[k][1]] for k in rotors) == ["C", "CB", "CH3"]
    assert (alanine_system.torsion_folds() == 3).sum() == 3


def test_zmatrix_transform_reproduces_structures_with_exact_log_det(alanine_system, alanine_frames):
    zm = alanine_system.zmatrix
    t = ZMatrixTransform(zm)
    ic = internal_coordinates(zm, alanine_frames)
    y, ladj = t.call_and_ladj(ic)
    frame = RigidFrame(22, zm.atoms)
    x = frame.positions(y)
    torch.testing.assert_close(torch.cdist(x, x), torch.cdist(alanine_frames, alanine_frames), rtol=0, atol=1e-12)
    torch.testing.assert_close(internal_coordinates(zm, x), ic, rtol=0, atol=1e-12)  # signed torsions: chirality kept
    _check_bijection(t, ic[:2])
    # ZMatrix ladj + rigid-frame factor = the textbook Z-matrix Jacobian r1^2 r2^2 sin(t2) prod r^2 sin(t)
    body = ic[:, 3:].reshape(len(ic), -1, 3)
    textbook = 2 * torch.log(ic[:, 0]) + 2 * torch.log(ic[:, 1]) + torch.log(torch.sin(ic[:, 2])) + \
        (2 * torch.log(body[..., 0]) + torch.log(torch.sin(body[..., 1]))).sum(-1)
    torch.testing.assert_close(ladj + RigidFrame.log_jacobian(y), textbook)


def test_zmatrix_of_alanine_has_phi_and_psi_as_proper_torsions(alanine_system):
    zm = alanine_system.zmatrix
    for quad in (alanine_system.phi_atoms, alanine_system.psi_atoms):
        pos = zm.torsion_position(quad)
        assert pos is not None
        assert zm.proper[(pos - 5) // 3]
    names = [a.name for a in alanine_system.topology.atoms]
    assert zm.ic_names(names)[zm.torsion_position(alanine_system.phi_atoms)] == "torsion(C-N-CA-C)"
    with pytest.raises(ValueError, match="not connected"):
        build_zmatrix([(0, 1), (1, 2), (3, 4)], 5)


def test_rigid_frame_is_canonical_and_keeps_geometry(alanine_frames):
    frame = RigidFrame(22, (0, 4, 6))
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))[0]
    rot = rot * torch.sign(torch.det(rot))  # a proper rotation
    moved = alanine_frames @ rot.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = frame.reduced(moved)
    torch.testing.assert_close(y, frame.reduced(alanine_frames), rtol=0, atol=1e-12)
    assert (y[:, 0] > 0).all() and (y[:, 1] > 0).all()
    x = frame.positions(y)
    torch.testing.assert_close(x[:, 0], torch.zeros_like(x[:, 0]))
    torch.testing.assert_close(torch.cdist(x, x), torch.cdist(moved, moved), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,decoder,k,cov", [("double-well", None, 1, "diagonal"), ("gaussian-mixture-20d", None, 10, "full"),
                                            ("alanine-dipeptide", "internal", 2, "full"),
                                            ("alanine-dipeptide", "pseudo-atoms", 3, "diagonal")])
def test_flow_density_is_consistent(name, decoder, k, cov, alanine_system):
    system = alanine_system if name == "alanine-dipeptide" else get_system(name)
    torch.manual_seed(0)
    flow = make_flow(system, k, decoder=decoder, fast_covariance=cov).double()
    if flow.fast_tril is not None:
        with torch.no_grad():
            flow.fast_tril.normal_(0, 0.03)  # correlated, but latents stay where float64 resolves the torsion windows
    with torch.no_grad():
        y, log_q, z = flow.sample(64, return_latent=True)
        torch.testing.assert_close(flow.log_prob(y), log_q, rtol=0, atol=1e-8)
        torch.testing.assert_close(flow.encode(y), z, rtol=0, atol=1e-9)
        assert (z.abs() <= flow.bound).all()
    _check_bijection(flow.decoder(), flow.latent(y[:2]).detach())


def test_slow_flow_log_prob_matches_the_change_of_variables():
    """log q(z) of the spline flow = truncated-normal log-density - log|det dz/dz0| (k = 2), normalised base."""
    system = get_system("gaussian-mixture")
    torch.manual_seed(1)
    flow = make_flow(system, 2).double()
    t, base = flow._slow_transform(), flow.slow.base()
    z0 = base.rsample((4,))
    z, ladj = t.call_and_ladj(z0)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: t(v[None])[0], z0[i])
        assert float(ladj[i].detach()) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-9)
    torch.testing.assert_close(flow.slow_log_prob(z), base.log_prob(z0) - ladj)
    torch.testing.assert_close(t.inv(z), z0)
    assert (z.abs() <= flow.bound).all()
    grid = torch.linspace(-flow.bound, flow.bound, 4001, dtype=torch.float64)[:, None].repeat(1, 2)
    p1 = torch.exp(base.base_dist.log_prob(grid))[:, 0]
    assert float(torch.trapezoid(p1, grid[:, 0])) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------------- estimates


def test_reweighted_mean_and_standard_error_are_calibrated():
    """q = N(0, 1), p = N(0.5, 1): 200 repeats of the reweighted mean; their spread matches the standard error."""
    rng = np.random.default_rng(4)
    zs, ses = [], []
    for _ in range(200):
        x = rng.normal(size=(2000,))
        log_q = -0.5 * x**2
        energies = 0.5 * (x - 0.5) ** 2  # kT = 1
        s = FlowSamples(np.zeros((2000, 1, 3)), x[:, None], log_q, energies, np.zeros(2000), 1.0)
        m, se = s.mean(x)
        zs.append((m - 0.5) / se)
        ses.append(se)
    zs = np.asarray(zs)
    assert abs(zs.mean()) < 3 / math.sqrt(len(zs))  # unbiased
    assert 0.8 < zs.std() < 1.2  # the standard error is right
    assert 0.7 < s.ess_fraction < 0.85  # exp(-0.25) = 0.78 for this pair


# ---------------------------------------------------------------------------- training


def _tiny_settings(**kw):
    base = dict(batch=64, initial_steps=20, steps=5, tempering="linear", beta0=0.5, delta_beta=0.5, n_weights=64,
                seed=3)
    base.update(kw)
    return TrainSettings(**base)


def test_training_resumes_bit_for_bit(tmp_path):
    system = get_system("double-well")
    torch.manual_seed(0)
    straight = FlowTrainer(make_flow(system), system, _tiny_settings())
    straight.fit()
    assert straight.state.finished and [h["beta"] for h in straight.history] == [0.5, 1.0, 1.0]

    ckpt = str(tmp_path / "run.pt.ckpt")
    torch.manual_seed(0)
    first = FlowTrainer(make_flow(system), system, _tiny_settings(), checkpoint=ckpt,
                        callback=lambda info: info["step"] >= 23)
    state = first.fit()
    assert not state.finished and state.total_steps == 23 and state.stage == 1
    torch.manual_seed(123)  # whatever happens to the global RNG in between
    second = FlowTrainer(make_flow(system), system, _tiny_settings(), checkpoint=ckpt, resume=True)
    second.fit()
    assert second.state.finished and second.state.total_steps == straight.state.total_steps
    for (k, a), (_, b) in zip(straight.flow.state_dict().items(), second.flow.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="settings differ.*batch"):
        FlowTrainer(make_flow(system), system, _tiny_settings(batch=32), checkpoint=ckpt, resume=True)


def test_training_stops_within_a_second_on_request():
    import time

    system = get_system("double-well")
    stop_at = {}

    def callback(info):
        if info["step"] == 5:
            stop_at["t"] = time.perf_counter()
            return True
        return False

    trainer = FlowTrainer(make_flow(system), system, _tiny_settings(initial_steps=10000), callback=callback)
    state = trainer.fit()
    assert time.perf_counter() - stop_at["t"] < 1.0
    assert state.total_steps == 5 and not state.finished


def test_ctrl_c_stops_training_and_writes_the_checkpoint(tmp_path):
    import os
    import signal

    system = get_system("double-well")
    ckpt = str(tmp_path / "x.pt.ckpt")
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job

    def interrupt(info):
        if info["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
        return False

    trainer = FlowTrainer(make_flow(system), system, _tiny_settings(initial_steps=1000), checkpoint=ckpt,
                          callback=interrupt)
    state = trainer.fit()
    assert state.total_steps == 4 and not state.finished
    assert torch.load(ckpt, weights_only=True)["state"]["total_steps"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def test_adaptive_tempering_follows_the_kl_rule():
    """One adaptive step: the accepted d satisfies the relative-KL bound, 0.6 d / 0.6 would not have been needed."""
    system = get_system("double-well")
    trainer = FlowTrainer(make_flow(system), system, _tiny_settings(tempering="adaptive", beta0=0.01, delta_beta=0.5,
                                                                     delta_kl=0.05))
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(500, generator=gen, dtype=torch.float64) * 3 + 5
    rest = -0.5 * torch.randn(500, generator=gen, dtype=torch.float64) ** 2
    trainer._next_lambda(u, rest)
    d = trainer.state.lam - 0.01
    assert 0 < d <= 0.5
    log_w = -0.01 * u + rest
    log_nw = log_w - torch.logsumexp(log_w, 0)
    kl = float(torch.logsumexp(log_w, 0) - math.log(500) - log_w.mean())

    def increase(step):
        return (float(torch.logsumexp(log_nw - step * u, 0)) + step * float(u.mean())) / kl

    assert increase(d) <= 0.05
    assert d == pytest.approx(0.5) or increase(d / 0.6) > 0.05  # the largest step of the 0.6 ladder
    expected_log_z = float(torch.logsumexp(log_w, 0) - math.log(500)) + float(torch.logsumexp(log_nw - d * u, 0))
    assert trainer.state.log_z == pytest.approx(expected_log_z)


@pytest.mark.slow
def test_double_well_reweighted_population_matches_the_exact_value():
    """Short training; the reweighted P(x1 < 0) is within 3 standard errors of 0.99165 and z follows x1."""
    system = get_system("double-well")
    torch.manual_seed(0)
    trainer = FlowTrainer(make_flow(system), system,
                          TrainSettings(batch=256, initial_steps=800, steps=60, delta_beta=0.2, delta_kl=3.0, seed=0))
    trainer.fit()
    samples = trained_from_trainer(trainer).sample(40000, seed=1)
    pops = samples.populations(system)
    exact = system.exact_populations()["x1<0"]
    value, se = pops["x1<0"]
    assert abs(value - exact) < 3 * se
    assert samples.ess_fraction > 0.3
    assert abs(np.corrcoef(samples.slow[:, 0], samples.positions[:, 0, 0])[0, 1]) > 0.9


# ---------------------------------------------------------------------------- files, CG map, reconstruction


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    system = get_system("double-well")
    torch.manual_seed(0)
    trainer = FlowTrainer(make_flow(system), system, _tiny_settings())
    trainer.fit()
    path = str(tmp_path_factory.mktemp("flow") / "dw.pt")
    save_flow(path, trained_from_trainer(trainer))
    return path


def test_flow_file_is_plain_data_and_reloads_identically(tiny_trained):
    raw = torch.load(tiny_trained, weights_only=True)
    assert raw["format"] == "latentlab-flow" and raw["system"]["name"] == "double-well"
    trained = load_flow(tiny_trained)
    again = load_flow(tiny_trained)
    s1 = trained.sample(100, seed=7)
    s2 = again.sample(100, seed=7)
    np.testing.assert_array_equal(s1.positions, s2.positions)
    np.testing.assert_allclose(s1.log_q, s2.log_q)
    assert trained.train["finished"] and trained.train["steps"] == 30


def test_slow_map_is_a_bounded_float64_cg_map_with_jacobians(tiny_trained):
    trained = load_flow(tiny_trained)
    cg = flow_slow_map(trained)
    assert cg.names == ["z0"] and cg.bounds == [(-5.0, 5.0)] and cg.units == ["1"]
    s = trained.sample(50, seed=2)
    q = cg(torch.as_tensor(s.positions))
    assert q.dtype == torch.float64
    np.testing.assert_allclose(q.numpy(), s.slow, atol=2e-5)  # samples were drawn in float32
    x = torch.as_tensor(s.positions[:4])
    jac = cg.jacobian(x)  # torch.func under the hood
    eps = 1e-6
    for a in range(2):
        dx = torch.zeros_like(x)
        dx[:, 0, a] = eps
        fd = (cg(x + dx) - cg(x - dx))[:, 0] / (2 * eps)
        torch.testing.assert_close(jac[:, 0, 0, a], fd, rtol=1e-5, atol=1e-7)
    assert torch.all(jac[:, 0, 0, 2] == 0)  # the padded z coordinate does not enter


def test_slow_map_and_reconstructor_for_alanine_round_trip(alanine_system, alanine_frames):
    from latentlab.flows.store import TrainedFlow

    torch.manual_seed(0)
    trained = TrainedFlow(make_flow(alanine_system, 2).double(), alanine_system, dtype=torch.float64)
    cg = flow_slow_map(trained)
    q = cg(alanine_frames)
    assert q.shape == (5, 2) and (q.abs() < 5).all()
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    rot = rot * torch.sign(torch.det(rot))
    torch.testing.assert_close(cg(alanine_frames @ rot.T + 0.3), q)  # rigid-body invariant
    rec = FlowReconstructor(trained)
    x = rec.reconstruct(q.numpy(), seed=1)
    assert x.shape == (5, 22, 3) and rec.topology.n_atoms == 22
    torch.testing.assert_close(cg(torch.as_tensor(x)), q, rtol=0, atol=1e-8)  # same slow latent back
    np.testing.assert_array_equal(x, rec.reconstruct(q.numpy(), seed=1))
    assert "ATOM" in rec.pdb(q[0].numpy(), seed=1)
    with pytest.raises(ValueError, match="outside the slow latent's box"):
        rec.reconstruct(np.array([[6.0, 0.0]]))
    jac = cg.jacobian(alanine_frames[:2])
    assert jac.shape == (2, 2, 22, 3) and torch.isfinite(jac).all()


def test_flow_samples_become_a_weighted_dataset(tiny_trained, tmp_path):
    from latentlab.data import load

    trained = load_flow(tiny_trained)
    s = trained.sample(300, forces=True, seed=0)
    ds = s.to_dataset(trained.system, name="dw")
    path = str(tmp_path / "dw.h5")
    ds.save(path)
    back = load(path)
    assert back.n_frames == 300 and back.has_weights
    np.testing.assert_allclose(back.weights, s.weights / s.weights.mean(), rtol=1e-6)
    np.testing.assert_allclose(back.forces[:, 0, :2], trained.system.energy.forces(
        torch.as_tensor(s.positions))[:, 0, :2].numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_flow_samples_on_the_device(device):
    system = get_system("gaussian-mixture")
    flow = make_flow(system).to(device)
    with torch.no_grad():
        y, log_q = flow.sample(16)
    assert y.device.type == device and log_q.shape == (16,)


def test_structured_flow_refuses_bad_sizes():
    from latentlab.flows.model import LinearDecoder

    with pytest.raises(ValueError, match="n_slow"):
        StructuredFlow(LinearDecoder(torch.eye(2)), 3)
    with pytest.raises(ValueError, match="system"):
        get_system("argon")


def test_alanine_report_has_reference_populations_and_bond_score(alanine_system):
    from latentlab.flows import flow_report
    from latentlab.flows.store import TrainedFlow

    torch.manual_seed(0)
    trained = TrainedFlow(make_flow(alanine_system, 2), alanine_system)
    rep = flow_report(trained, n=300, seed=0)
    assert set(rep["populations"]) == {"C5", "C7eq", "alpha_R", "phi>0"}
    c5 = rep["populations"]["C5"]
    assert c5["reference"] == pytest.approx(0.228, abs=5e-4)  # the built-in 300 K trajectory
    assert c5["reference_stderr"] == pytest.approx(0.005, abs=1e-3)  # 25 time blocks
    assert 0.0 <= rep["bond_score"] <= 1.0 and rep["n_samples"] == 300


def test_block_standard_error_matches_independent_blocks():
    from latentlab.flows.systems import block_mean_and_error

    rng = np.random.default_rng(0)
    v = rng.normal(size=2500)
    mean, se = block_mean_and_error(v, np.ones(2500), [slice(0, 2500)], n_blocks=25)
    assert mean == pytest.approx(v.mean())
    assert se == pytest.approx(np.std(v.reshape(25, 100).mean(1), ddof=1) / 5, rel=1e-12)
    # two trajectories: blocks never straddle the boundary
    _, se2 = block_mean_and_error(np.r_[np.zeros(1000), np.ones(1000)], np.ones(2000), [slice(0, 1000), slice(1000, 2000)], 4)
    assert se2 == pytest.approx(np.std([0, 0, 1, 1], ddof=1) / 2)
