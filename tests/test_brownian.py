"""Atomic friction in latent Langevin and the overdamped (Brownian) limit, against exact answers."""

import math

import numpy as np
import pytest
import torch

from latentlab.dynamics import BrownianDynamics, LatentLangevin, mean_and_stderr
from latentlab.model import CGModel
from latentlab.simulation import Simulation
from latentlab.testing import ThreeAtomSystem

KT = 2.5


def harmonic(k):
    return lambda q: 0.5 * k * (q * q).sum(1)


def constant_mass(a):
    a = torch.as_tensor(a, dtype=torch.float64)
    return lambda q: a.to(q).expand(q.shape[0], -1, -1)


def sample(integrator, n_cg, n_walkers, burn_in, n_records, every=1):
    """Q of ``n_walkers`` walkers started at 0: ``burn_in`` steps, then ``n_records`` records ``every`` steps
    apart; shape=(n_records, n_walkers, n_cg)."""
    state = integrator.init(torch.zeros(n_cg), n_walkers=n_walkers)
    integrator.step(state, burn_in)
    records = []
    for _ in range(n_records):
        integrator.step(state, every)
        records.append(state.Q.clone())
    return torch.stack(records)


def test_atomic_friction_step_is_the_exact_ou_update():
    # At fixed Q, dP = -gamma P dt + sqrt(2 gamma kT) A^-1/2 dW: after t the mean is exp(-gamma t) P0 and the
    # covariance kT A^-1 (1 - exp(-2 gamma t)), whatever A (the coordinate model would give exp(-gamma A t)).
    a = torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=torch.float64)
    gamma, t, n = 3.0, 0.1, 40000
    sampler = LatentLangevin(harmonic(1.0), constant_mass(a), kT=KT, dt=2 * t, gamma=gamma, seed=0,
                             friction_model="atomic")
    state = sampler.init(torch.zeros(2), n_walkers=n)
    p0 = torch.tensor([3.0, -2.0], dtype=torch.float64)
    state.P = p0.expand(n, 2).clone()
    sampler._friction(state, t)
    p = state.P
    decay = math.exp(-gamma * t)
    cov = KT * torch.linalg.inv(a) * (1 - math.exp(-2 * gamma * t))
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((p.mean(0) - decay * p0).abs() < 4 * se_mean).all(), (p.mean(0), decay * p0)
    d = p - p.mean(0)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        sample = (d[:, i] * d[:, j]).mean()
        se = math.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n)  # variance of a Gaussian product moment
        assert abs(sample - cov[i, j]) < 4 * se, (i, j, float(sample), float(cov[i, j]))


def test_atomic_friction_samples_the_exact_gaussian():
    k = torch.tensor([[40.0, 10.0], [10.0, 20.0]], dtype=torch.float64)
    a = torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=torch.float64)
    pot = lambda q: 0.5 * torch.einsum("wi,ij,wj->w", q, k.to(q), q)
    # slowest mode: omega^2 = 1.3/ps^2 (eigenvalues of A K), near critical damping at gamma = 2/ps
    sampler = LatentLangevin(pot, constant_mass(a), kT=KT, dt=0.01, gamma=2.0, seed=1, friction_model="atomic")
    q = sample(sampler, 2, n_walkers=2000, burn_in=600, n_records=300, every=3)
    cov_exact = KT * torch.linalg.inv(k)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        m, se, _ = mean_and_stderr(q[..., i] * q[..., j])
        assert abs(m - float(cov_exact[i, j])) < 4 * se, (i, j, m, float(cov_exact[i, j]), se)


@pytest.mark.parametrize("friction_model", ["coordinate", "atomic"])
def test_brownian_step_is_the_exact_ar1_process_of_a_harmonic_well(friction_model):
    # V = k q^2 / 2, A = a: one Euler-Maruyama step is q' = phi q + s xi with phi = 1 - c dt, c = k/gamma
    # (coordinate) or a k/gamma (atomic), s^2 = 2 kT dt/gamma (x a for atomic); stationary variance s^2/(1-phi^2).
    k, a, gamma, dt = 10.0, 0.5, 2.0, 0.02
    c, s2 = (k / gamma, 2 * KT * dt / gamma) if friction_model == "coordinate" else (a * k / gamma, 2 * KT * dt * a / gamma)
    phi = 1 - c * dt
    var_exact = s2 / (1 - phi * phi)
    bd = BrownianDynamics(harmonic(k), constant_mass([[a]]), kT=KT, dt=dt, gamma=gamma, seed=2,
                          friction_model=friction_model)
    q = sample(bd, 1, n_walkers=4000, burn_in=300, n_records=600)[..., 0]  # (n_times, n_walkers)
    m, se, _ = mean_and_stderr(q * q)
    assert abs(m - var_exact) < 4 * se, (m, var_exact, se)
    # the one-step regression coefficient is phi; its standard error is sqrt((1 - phi^2) / n_pairs)
    x, y = q[:-1].flatten(), q[1:].flatten()
    phi_hat = float((x * y).sum() / (x * x).sum())
    assert abs(phi_hat - phi) < 4 * math.sqrt((1 - phi * phi) / x.numel()), (phi_hat, phi)


@pytest.mark.parametrize("friction_model", ["coordinate", "atomic"])
def test_brownian_samples_the_free_energy_with_a_position_dependent_mass(friction_model):
    # 1-D: V = k q^2/2, A(q) = exp(b sin q).  The stationary density is exp(-F/kT), F = V + kT/2 ln A
    # (the momenta's det A^-1/2); with atomic friction the Ito drift kT A'/gamma keeps it so.
    k, b, gamma, dt = 10.0, 1.0, 1.0, 0.0005
    bd = BrownianDynamics(harmonic(k), lambda q: torch.exp(b * torch.sin(q[:, 0]))[:, None, None], kT=KT, dt=dt,
                          gamma=gamma, seed=3, friction_model=friction_model)
    q = sample(bd, 1, n_walkers=4000, burn_in=2000, n_records=200, every=20)[..., 0]
    grid = np.linspace(-4, 4, 40001)
    weight = np.exp(-(0.5 * k * grid ** 2 + 0.5 * KT * b * np.sin(grid)) / KT)
    mean_exact = float((grid * weight).sum() / weight.sum())  # about -0.10: the ln A term tilts the well
    m, se, _ = mean_and_stderr(q)
    assert abs(m - mean_exact) < 4 * se, (m, mean_exact, se)
    assert abs(m) > 10 * se  # exp(-V/kT) alone (mean 0) is excluded: the test sees the ln det A term
    m2, se2, _ = mean_and_stderr(q * q)
    var_exact = float((grid ** 2 * weight).sum() / weight.sum())
    # Euler-Maruyama's own bias of the variance: c dt / 2 relative for a harmonic well with rate c, here
    # c <= max(A) k / gamma = e k / gamma (0.7 % of the variance here), allowed on top of the statistical error
    em_bias = 0.5 * math.e * k * dt / gamma * var_exact
    assert abs(m2 - var_exact) < 4 * se2 + em_bias, (m2, var_exact, se2, em_bias)


def test_simulation_builds_and_the_model_stores_the_dynamics(tmp_path):
    system = ThreeAtomSystem()
    model = CGModel.exact(system, start_points=system.sample_cg(50, seed=1))
    assert (model.dynamics, model.friction_model) == ("langevin", "coordinate")
    calibrated = CGModel.load(CGModel.save(
        type(model)(**{**model.__dict__, "friction": 50.0, "dynamics": "brownian", "friction_model": "atomic"}),
        str(tmp_path / "m.pt")))
    assert (calibrated.friction, calibrated.dynamics, calibrated.friction_model) == (50.0, "brownian", "atomic")
    sim = Simulation(calibrated, n_walkers=16, dt=0.005, seed=0)
    assert isinstance(sim.integrator, BrownianDynamics) and sim.gamma == 50.0
    sim.run(50)
    summary = sim.summary()
    assert (summary["dynamics"], summary["friction_model"], summary["gamma_units"]) == ("brownian", "atomic", "1/ps")
    assert sim.problems() == []
    # asked for explicitly, the other dynamics win over the model's; atomic "auto" is a rate of 10/ps
    sim = Simulation(calibrated, n_walkers=16, gamma="auto", dynamics="langevin", seed=0)
    assert type(sim.integrator) is LatentLangevin and sim.gamma == 10.0
    # the model's 50 /ps is no friction in amu/ps: another friction model starts from "auto"
    sim = Simulation(calibrated, n_walkers=16, dynamics="langevin", friction_model="coordinate", seed=0)
    assert sim.gamma != 50.0 and sim.integrator.friction_model == "coordinate"


@pytest.mark.parametrize("kwargs, match", [
    ({"dynamics": "verlet"}, "dynamics: got 'verlet'.*Fix"),
    ({"friction_model": "viscous"}, "friction_model: got 'viscous'.*Fix"),
    ({"dynamics": "brownian", "gamma": 0.0}, "gamma: is 0.*Fix"),
    ({"dynamics": "brownian", "gamma": 1.0, "metropolis": True}, "metropolis.*Fix"),
])
def test_bad_dynamics_settings_are_refused(kwargs, match):
    system = ThreeAtomSystem()
    model = CGModel.exact(system, start_points=system.sample_cg(10, seed=1))
    with pytest.raises(ValueError, match=match):
        Simulation(model, n_walkers=4, **kwargs)
