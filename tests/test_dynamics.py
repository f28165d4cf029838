"""Latent Langevin sampler: exact answers, integrator properties, boundaries, failures, diagnostics."""

import math

import numpy as np
import pytest
import torch

from latentlab.demo import three_atom_demo
from latentlab.dynamics import LatentLangevin, integrated_autocorrelation_time, mean_and_stderr
from latentlab.simulation import CallbackReporter, Simulation, TrajectoryReporter


def run(sampler, state, n_steps, record_every=1, callback=None):
    """Record ``n_steps`` of an integrator through the one recording loop (Simulation + TrajectoryReporter)."""
    recorder = TrajectoryReporter(record_every)
    reporters = [recorder] + ([CallbackReporter(callback, record_every)] if callback else [])
    sim = Simulation.wrap(sampler, state, reporters=reporters)
    sim.run(n_steps)
    return recorder.record(), sim

from conftest import DEVICES


def test_autocorrelation_time_of_ar1_process():
    # AR(1) x_t = phi x_{t-1} + e_t has tau_int = (1 + phi) / (1 - phi).
    rng = np.random.default_rng(0)
    phi, n, w = 0.8, 4000, 200  # sd of the tau estimate ~0.15 here
    x = np.zeros((n, w))
    e = rng.normal(size=(n, w))
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    tau = integrated_autocorrelation_time(x[200:])
    assert abs(tau - 9.0) < 0.6
    mean, se, _ = mean_and_stderr(x[200:])
    assert abs(mean) < 4 * se


def gaussian_sampler(a_matrix, kcov, **kw):
    """Sampler for V = 1/2 Q^T K Q with a constant mass matrix; exact covariance kT K^-1."""
    a_const = torch.as_tensor(a_matrix, dtype=torch.float64)
    k = torch.as_tensor(kcov, dtype=torch.float64)

    def potential(q):
        return 0.5 * torch.einsum("wi,ij,wj->w", q, k.to(q), q)

    def mass(q):
        return a_const.to(q).expand(q.shape[0], -1, -1)

    return LatentLangevin(potential, mass, kT=2.5, **kw)


@pytest.mark.parametrize("device", DEVICES)
def test_gaussian_with_constant_mass_samples_exact_covariance(device):
    k = torch.tensor([[40.0, 10.0], [10.0, 20.0]])
    a = torch.tensor([[0.2, 0.05], [0.05, 0.1]])
    sampler = gaussian_sampler(a, k, dt=0.01, gamma=20.0, seed=1, device=device)
    state = sampler.init(torch.zeros(2), n_walkers=2000)
    sampler.step(state, 200)
    rec, sim = run(sampler, state, 600, record_every=3)
    q = rec["Q"].cpu()
    cov_exact = 2.5 * torch.linalg.inv(k.double())
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        series = q[..., i] * q[..., j]
        m, se, _ = mean_and_stderr(series)
        assert abs(m - float(cov_exact[i, j])) < 4 * se, (i, j, m, float(cov_exact[i, j]), se)
    ratio = float(rec["kinetic"].mean()) / (2 * sampler.kT)
    assert abs(ratio - 1) < 0.01
    assert abs(sim.diagnostics()["kinetic_temperature_ratio"] - 1) < 0.01


@pytest.mark.parametrize("friction_model, gamma, series", [("coordinate", 2.0, True), ("coordinate", 20.0, False),
                                                             ("atomic", 4.0, False)])
def test_every_friction_path_samples_a_four_dimensional_gaussian(friction_model, gamma, series):
    """The three friction steps (power series; eigenbasis by LAPACK for 4 coordinates where gamma dt |A| > 1;
    atomic friction) with the walkers-last step all give the exact covariance kT K^-1 and equipartition."""
    gen = torch.Generator().manual_seed(2)
    b = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    k = b @ b.T + 10.0 * torch.eye(4, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))[0]
    a = u @ torch.diag(torch.tensor([0.5, 2.0, 5.0, 20.0], dtype=torch.float64)) @ u.T
    sampler = gaussian_sampler(a, k, dt=0.01, gamma=gamma, seed=4, friction_model=friction_model)
    a_last = a[:, :, None].expand(4, 4, 2)
    assert (sampler._series_terms(a_last, sampler.dt) is not None) == series  # the path this case is meant to take
    state = sampler.init(torch.zeros(4), n_walkers=1000)
    sampler.step(state, 300)
    rec, sim = run(sampler, state, 600, record_every=2)
    q = rec["Q"]
    cov_exact = 2.5 * torch.linalg.inv(k)
    for i, j in [(0, 0), (1, 1), (2, 3), (3, 3)]:
        m, se, _ = mean_and_stderr(q[..., i] * q[..., j])
        assert abs(m - float(cov_exact[i, j])) < 4 * se, (i, j, m, float(cov_exact[i, j]), se)
    m, se, _ = mean_and_stderr(rec["kinetic"] / (4 * sampler.kT))  # <P^T A P> = N kT
    assert abs(m - 1) < 4 * se, (m, se)
    assert sim.diagnostics()["reseeded"] == 0


@pytest.mark.parametrize("n_cg, kw", [(2, dict(gamma=2.0)), (2, dict(gamma=50.0)), (2, dict(gamma=0.0)),
                                       (2, dict(gamma=2.0, metropolis=True)), (2, dict(gamma=2.0, friction_model="atomic")),
                                       (1, dict(gamma=2.0, periodic=[True]))])
def test_the_state_keeps_ordinary_tensors(n_cg, kw):
    """The step's solves and friction series run on temporaries in inference mode; what the state keeps must be
    ordinary tensors on every path (series or eigenbasis friction, none, Metropolis, one periodic coordinate): a
    user modifies them in place and differentiates through them, and the step's caches read their versions."""
    a = torch.tensor([[0.2, 0.05], [0.05, 0.1]])[:n_cg, :n_cg]
    k = torch.tensor([[40.0, 10.0], [10.0, 20.0]])[:n_cg, :n_cg]
    sampler = gaussian_sampler(a, k, dt=0.01, seed=3, **kw)
    state = sampler.init(torch.full((n_cg,), 0.1), n_walkers=32)
    sampler.step(state, 3)
    for name in ("Q", "P", "V", "grad_V", "A", "dA", "start"):
        assert not getattr(state, name).is_inference(), name
    state.P.mul_(-1.0)  # in place, outside inference mode: the kinetic-energy cache must see it
    assert torch.allclose(state.kinetic_energy(), 0.5 * torch.einsum("wi,wij,wj->w", state.P, state.A, state.P))
    q = state.Q.requires_grad_(True)
    (q**2).sum().backward()
    assert torch.equal(q.grad, 2 * q.detach())
    state.Q = q.detach()
    sampler.step(state, 2)
    assert bool(torch.isfinite(state.Q).all()) and not state.Q.is_inference()


def test_hamiltonian_step_is_time_reversible():
    from latentlab.testing import ThreeAtomSystem

    system = ThreeAtomSystem()
    # reversible when the fixed points are converged (a tight tolerance here; the default stops at 1e-8)
    sampler = LatentLangevin.from_pmf(system.pmf, system.effective_mass, system.kT, dt=0.004, gamma=0.0, seed=3,
                                      bounds=system.cg_map().bounds, tolerance=1e-12)
    q0 = system.sample_cg(64, seed=3)
    state = sampler.init(q0)
    p0 = state.P.clone()

    def hamiltonian_step():  # the H(h) part of the sampler's step alone
        q, p_last, v, gv, a, da, last, _ = sampler._hamiltonian_step(state)
        state.P = p_last.T  # the step returns the momenta with the walkers last
        state.take(None, q, v, gv, a, da, None, None, last)

    for _ in range(10):
        hamiltonian_step()
    state.P = -state.P
    for _ in range(10):
        hamiltonian_step()
    torch.testing.assert_close(state.Q, q0, rtol=0, atol=1e-8)
    torch.testing.assert_close(-state.P, p0, rtol=0, atol=1e-6 * float(p0.abs().max()))


def _kick_error(sampler, state):
    """The half kick from ``state`` and its error against the exact solution (fixed point to round-off),
    relative to 1 + |P| as the tolerance: ``(P (N, W), converged (W,), error (W,))``."""
    from latentlab.dynamics.langevin import quadratic_gradient

    _, da = state.walkers_last()
    p0 = state.P.T.contiguous()
    base = p0 - 0.5 * sampler.dt * state.grad_V.T
    p, converged, minus_jac = sampler._half_kick(p0, base, da)
    if converged is None:  # every walker
        converged = torch.ones(p.shape[1], dtype=torch.bool)
    exact = p.clone()
    for _ in range(300):  # contraction rate below 0.2 in both systems below
        exact = base - 0.25 * sampler.dt * quadratic_gradient(exact, da)
    assert float((p - p0).abs().max()) > 1e-3  # the kick did move the momenta
    # the position map's Jacobian h/2 sum_j dA_ij/dQ_k P_j, which the kick hands on for the drift's rate: taken
    # at the first iterate P1 where the Newton step was taken, at the solution where the walker iterated (to
    # round-off: a few products of numbers of the Jacobian's size)
    n, w = p.shape

    def jacobian(momenta):
        return 0.5 * sampler.dt * (da.view(n, n, n, w) * momenta[None, :, None]).sum(1)

    p1 = base - 0.25 * sampler.dt * quadratic_gradient(p0, da)
    off = torch.minimum((minus_jac + jacobian(p1)).abs().amax((0, 1)), (minus_jac + jacobian(p)).abs().amax((0, 1)))
    assert float(off.max()) <= 1e-13 * float(jacobian(p).abs().max())
    return p, converged, (p - exact).abs().amax(0) / (1.0 + exact.abs().amax(0))


def test_half_kick_newton_step_is_within_its_bound():
    """A smooth A(Q): every walker takes the Newton step (no fixed-point iteration at all), and its bounds
    (Newton error and Neumann truncation, tol/2 each) hold against the exact solution."""
    def mass(q):  # symmetric positive definite, varying on the scale of the walkers' spread
        d = torch.exp(0.4 * torch.sin(q))
        a = torch.diag_embed(d)
        off = 0.2 * torch.cos(q[:, 0] - q[:, 1]) * torch.sqrt(d[:, 0] * d[:, 1])
        a[:, 0, 1] = a[:, 1, 0] = off
        return a

    sampler = LatentLangevin(lambda q: 5.0 * (1.0 - torch.cos(q)).sum(1), mass, kT=2.5, dt=0.01, gamma=1.0, seed=2,
                             periodic=[True, True])
    state = sampler.init(torch.rand(512, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 6 - 3)

    def no_iteration(*args, **kwargs):
        raise AssertionError("the Newton step's bound failed for some walker")

    sampler._solve = no_iteration
    _, converged, error = _kick_error(sampler, state)
    assert bool(converged.all())
    assert float(error.max()) <= sampler.tolerance


@pytest.mark.parametrize("hot, tolerance", [(1.0, 1e-8), (3.0, 1e-8), (1.0, 1e-12)])
def test_half_kick_falls_back_to_iteration_where_the_newton_bound_fails(hot, tolerance):
    """Three atoms: near cos = +-1 A is steep, and hot walkers or a tolerance below the Newton error (some
    1e-12) send more walkers to fixed-point iteration; every walker is then within the 10x of the tolerance
    that counts as converged (the iteration stops on an estimated error)."""
    from latentlab.testing import ThreeAtomSystem

    system = ThreeAtomSystem()
    sampler = LatentLangevin.from_pmf(system.pmf, system.effective_mass, system.kT, dt=0.004, gamma=1.0, seed=3,
                                      bounds=system.cg_map().bounds, tolerance=tolerance)
    state = sampler.init(system.sample_cg(256, seed=5))
    state.P = state.P * hot
    iterated = []
    solve = sampler._solve
    sampler._solve = lambda update, x, *a, **k: (iterated.append(x.shape[1]), solve(update, x, *a, **k))[1]
    _, converged, error = _kick_error(sampler, state)
    assert iterated and 0 < iterated[0] <= 256  # some walkers, not necessarily all, iterated
    assert bool(converged.all())
    assert float(error.max()) <= 10 * tolerance


def test_energy_drift_at_zero_friction_is_small_and_second_order():
    from latentlab.testing import ThreeAtomSystem

    system = ThreeAtomSystem()
    drifts = []
    for dt in (0.004, 0.002):
        sampler = LatentLangevin.from_pmf(system.pmf, system.effective_mass, system.kT, dt=dt, gamma=0.0, seed=5,
                                          bounds=system.cg_map().bounds)
        state = sampler.init(system.sample_cg(256, seed=5))
        h0 = state.hamiltonian()
        rec, _ = run(sampler, state, int(round(2.0 / dt)), record_every=10)
        drifts.append(float((rec["H"] - h0).abs().max() / system.kT))
    assert drifts[0] < 0.05  # |H - H0| < 0.05 kT over 2 ps
    assert 2.5 < drifts[0] / drifts[1] < 6.0  # error ~ dt^2: halving dt divides it by ~4


@pytest.mark.slow
def test_three_atom_consistent_convention_is_exact_and_eq9_is_biased():
    result = three_atom_demo(n_walkers=1500, dt=0.002, production=4.0, burn_in=1.0, seed=7)
    consistent = result["conventions"]["consistent"]
    for name in ("mean_r1", "var_r1", "mean_r2", "var_cos"):
        assert abs(consistent[name]["z"]) < 4, (name, consistent[name])
    assert abs(result["kinetic_temperature_ratio"] - 1) < 0.01
    # Eq. 9 of Bruce et al. samples p(Q)/det A: mean r1 shifts by ~0.013 nm (docs/theory.md section 2: 0.418 vs 0.40538).
    eq9 = result["conventions"]["eq9"]
    assert eq9["mean_r1"]["z"] > 20 and eq9["mean_r2"]["z"] > 20
    assert 0.010 < eq9["mean_r1"]["sampled"] - eq9["mean_r1"]["exact"] < 0.016


@pytest.mark.slow
def test_metropolis_is_exact_where_the_plain_integrator_is_biased():
    kw = dict(n_walkers=1500, dt=0.045, production=6.0, burn_in=1.0, record_every=2, conventions=("consistent",), seed=9)
    plain = three_atom_demo(metropolis=False, **kw)["conventions"]["consistent"]
    exact = three_atom_demo(metropolis=True, **kw)["conventions"]["consistent"]
    assert plain["var_cos"]["z"] > 5  # step-size bias
    for name in ("mean_r1", "var_r1", "mean_r2", "var_cos"):
        assert abs(exact[name]["z"]) < 4, (name, exact[name])
    acc = exact["diagnostics"]["acceptance_rate"]
    assert 0.5 < acc < 1.0


def test_periodic_coordinate_wraps_and_samples_von_mises():
    kappa = 2.0

    def potential(q):
        return -kappa * 2.5 * torch.cos(q[:, 0])

    def mass(q):
        return torch.full((q.shape[0], 1, 1), 0.5, dtype=q.dtype)

    sampler = LatentLangevin(potential, mass, kT=2.5, dt=0.02, gamma=5.0, periodic=[True], seed=2)
    state = sampler.init(torch.tensor([3.0]), n_walkers=1000)
    rec, _ = run(sampler, state, 3000, record_every=5)
    q = rec["Q"][100:, :, 0]
    assert float(q.min()) > -math.pi and float(q.max()) <= math.pi
    from scipy.special import i0, i1

    m, se, _ = mean_and_stderr(torch.cos(q))
    assert abs(m - i1(kappa) / i0(kappa)) < 4 * se


def test_bounded_coordinate_reflects_and_samples_uniformly():
    def potential(q):
        return torch.zeros(q.shape[0], dtype=q.dtype)

    def mass(q):
        return torch.full((q.shape[0], 1, 1), 1.0, dtype=q.dtype)

    sampler = LatentLangevin(potential, mass, kT=2.5, dt=0.05, gamma=2.0, bounds=[(-1.0, 1.0)], seed=4)
    state = sampler.init(torch.tensor([0.0]), n_walkers=1000)
    rec, _ = run(sampler, state, 2000, record_every=5)
    q = rec["Q"][50:, :, 0]
    assert float(q.abs().max()) <= 1.0
    assert state.counters["reflections"] > 0
    m, se, _ = mean_and_stderr(q**2)
    assert abs(m - 1.0 / 3.0) < 4 * se  # uniform on [-1, 1]


def test_blown_up_walkers_are_reseeded_and_counted():
    def potential(q):
        v = 0.5 * 10.0 * q[:, 0] ** 2
        return torch.where(q[:, 0] > 0.4, torch.full_like(v, float("nan")), v)  # a "hole" in the model

    def mass(q):
        return torch.full((q.shape[0], 1, 1), 1.0, dtype=q.dtype)

    sampler = LatentLangevin(potential, mass, kT=2.5, dt=0.01, gamma=1.0, seed=6)
    state = sampler.init(torch.tensor([0.0]), n_walkers=500)
    rec, sim = run(sampler, state, 300, record_every=10)
    assert state.counters["reseeded"] > 0 and sim.diagnostics()["reseeded_fraction"] > 0
    assert bool(torch.isfinite(rec["Q"]).all()) and bool(torch.isfinite(state.P).all())
    assert float(rec["Q"].max()) <= 0.4


def test_run_can_be_cancelled_by_callback():
    sampler = gaussian_sampler([[1.0]], [[1.0]], dt=0.01, gamma=1.0, seed=0)
    state = sampler.init(torch.zeros(1), n_walkers=4)
    rec, _ = run(sampler, state, 1000, record_every=10, callback=lambda s: s.step_count >= 30)
    assert len(rec["time"]) == 3 and state.step == 30


@pytest.mark.parametrize("kwargs,match", [
    (dict(dt=-1.0), "dt"), (dict(gamma=-1.0), "gamma"), (dict(kT=0.0), "kT"), (dict(max_iterations=0), "max_iterations"),
])
def test_bad_sampler_settings_are_refused(kwargs, match):
    base = dict(kT=2.5, dt=0.01, gamma=1.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LatentLangevin(lambda q: q.sum(1), lambda q: torch.eye(1).expand(q.shape[0], 1, 1), **base)


def test_bad_starting_points_are_refused():
    sampler = LatentLangevin(lambda q: (q**2).sum(1), lambda q: torch.eye(1, dtype=q.dtype).expand(q.shape[0], 1, 1),
                             kT=2.5, dt=0.01, gamma=1.0, bounds=[(-1.0, 1.0)])
    with pytest.raises(ValueError, match="outside the coordinate bounds"):
        sampler.init(torch.tensor([2.0]), n_walkers=3)
    with pytest.raises(ValueError, match="Q0"):
        sampler.init(torch.tensor([float("nan")]), n_walkers=3)
    with pytest.raises(ValueError, match="periodic"):
        LatentLangevin(lambda q: (q**2).sum(1), lambda q: torch.eye(2, dtype=q.dtype).expand(q.shape[0], 2, 2),
                       kT=2.5, dt=0.01, gamma=1.0, periodic=[True]).init(torch.zeros(2), n_walkers=2)


def test_coordinate_friction_step_is_the_exact_ou_update():
    # At fixed Q, dP = -gamma A P dt + sqrt(2 gamma kT) dW: after t the mean is exp(-gamma A t) P0 and the
    # covariance kT A^-1 (I - exp(-2 gamma A t)), against 40,000 walkers within 4 standard errors.
    kT, t, n, gamma = 2.5, 0.05, 40000, 6.0
    a = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    sampler = LatentLangevin(lambda q: 0.5 * (q * q).sum(1), lambda q: a.expand(q.shape[0], 2, 2), kT=kT,
                             dt=2 * t, gamma=gamma, seed=3)
    state = sampler.init(torch.zeros(2), n_walkers=n)
    p0 = torch.tensor([3.0, -2.0], dtype=torch.float64)
    state.P = p0.expand(n, 2).clone()
    sampler._friction(state, t)
    w, u = torch.linalg.eigh(a)
    decay = u @ torch.diag(torch.exp(-gamma * t * w)) @ u.T
    eye = torch.eye(2, dtype=torch.float64)
    cov = kT * torch.linalg.inv(a) @ (eye - decay @ decay)
    p = state.P
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((p.mean(0) - decay @ p0).abs() < 4 * se_mean).all(), (p.mean(0), decay @ p0)
    d = p - p.mean(0)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        se = math.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n)  # variance of a Gaussian product moment
        assert abs(float((d[:, i] * d[:, j]).mean()) - float(cov[i, j])) < 4 * se, (i, j)
