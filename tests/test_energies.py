"""Torch energies against OpenMM and against closed forms (float64)."""

import math

import numpy as np
import pytest
import torch

from latentlab.energies import AmberEnergy, DoubleWellEnergy, GaussianMixtureEnergy, OpenMMEnergy, linlog_cap

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def alanine():
    """OpenMM System of the built-in alanine dipeptide, and frames: 16 reference frames + 8 perturbed ones."""
    from latentlab.data import load
    from latentlab.data.generate import GenerateConfig, build_system

    _, _, system, _ = build_system(GenerateConfig(system="alanine-dipeptide", ns=1.0, out="unused.h5").resolved())
    ds = load("alanine-dipeptide")
    x = ds.positions[::800].astype(np.float64)  # 16 frames across the trajectory
    rng = np.random.default_rng(0)
    perturbed = x[:8] + rng.normal(0.0, 0.01, x[:8].shape)  # off-equilibrium: larger forces, every term active
    return system, np.concatenate([x, perturbed])


def _openmm_reference(system, frames):
    import openmm
    import openmm.unit as u

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for f in frames:
        ctx.setPositions(f)
        st = ctx.getState(getEnergy=True, getForces=True)
        energies.append(st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        forces.append(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    return np.array(energies), np.array(forces)


def test_amber_energy_matches_openmm_energies_and_forces_float64(alanine):
    system, frames = alanine
    e_ref, f_ref = _openmm_reference(system, frames)
    energy = AmberEnergy.from_system(system)
    e, f = energy.energy_and_forces(torch.as_tensor(frames))
    assert e.dtype == torch.float64
    assert np.abs(e.numpy() - e_ref).max() <= 1e-4
    rel = np.linalg.norm((f.numpy() - f_ref).reshape(len(frames), -1), axis=1) / \
        np.linalg.norm(f_ref.reshape(len(frames), -1), axis=1)
    assert rel.max() <= 1e-6


def test_amber_energy_terms_add_up_and_float32_is_close(alanine):
    system, frames = alanine
    energy = AmberEnergy.from_system(system)
    x = torch.as_tensor(frames)
    terms = energy.terms(x)
    assert set(terms) == {"bonds", "angles", "torsions", "coulomb", "lennard_jones"}
    torch.testing.assert_close(sum(terms.values()), energy(x))
    e32 = energy(x.float())
    assert e32.dtype == torch.float32
    # float32 positions carry ~1e-8 nm rounding; energies of O(100) kJ/mol agree to ~1e-3 kJ/mol
    assert (e32.double() - energy(x.float().double())).abs().max() < 5e-3


def test_openmm_bridge_is_the_oracle_and_differentiable(alanine):
    system, frames = alanine
    bridge = OpenMMEnergy(system)
    amber = AmberEnergy.from_system(system)
    x = torch.as_tensor(frames[:4]).requires_grad_(True)
    u = bridge(x)
    (g,) = torch.autograd.grad((u * torch.arange(1.0, 5.0, dtype=u.dtype)).sum(), x)
    e_ref, f_ref = _openmm_reference(system, frames[:4])
    np.testing.assert_allclose(u.detach().numpy(), e_ref, rtol=0, atol=1e-9)
    # backward multiplies the stored forces by the incoming gradient
    np.testing.assert_allclose(g.numpy(), -np.arange(1.0, 5.0)[:, None, None] * f_ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(amber(x.detach()), u.detach(), rtol=0, atol=1e-4)


def test_amber_energy_refuses_what_it_cannot_evaluate(alanine):
    import openmm

    system, _ = alanine
    other = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    other.addForce(openmm.CustomExternalForce("x^2"))
    with pytest.raises(ValueError, match="CustomExternalForce.*OpenMMEnergy"):
        AmberEnergy.from_system(other)
    constrained = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    constrained.addConstraint(0, 1, 0.109)
    with pytest.raises(ValueError, match="constraints"):
        AmberEnergy.from_system(constrained)
    with pytest.raises(ValueError, match="positions.*22 atoms|expected 22"):
        AmberEnergy.from_system(system)(np.zeros((2, 5, 3)))


@pytest.mark.parametrize("device", DEVICES)
def test_amber_energy_runs_on_the_device_of_its_input(alanine, device):
    system, frames = alanine
    energy = AmberEnergy.from_system(system).to(device)
    x = torch.as_tensor(frames[:3], device=device)
    u = energy(x)
    assert u.device.type == device and u.shape == (3,)


def test_linlog_cap_is_identity_below_and_smooth_at_the_threshold():
    t = 100.0
    u = torch.tensor([-5.0, 0.0, 99.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(linlog_cap(u, t), u)
    x = torch.tensor([t - 1e-6, t + 1e-6], dtype=torch.float64, requires_grad=True)
    y = linlog_cap(x, t)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.ones(2, dtype=torch.float64), rtol=1e-5, atol=0)
    big = linlog_cap(torch.tensor([1e6, 1e12, float("inf"), float("nan")], dtype=torch.float64), t)
    assert torch.isfinite(big).all()
    assert big[0] < big[1] <= big[2]
    assert big[1] < 10 * t * math.log(1e12 / t)  # logarithmic growth
    with pytest.raises(ValueError, match="threshold"):
        linlog_cap(u, -1.0)


def test_double_well_energy_is_the_papers_potential():
    from latentlab.testing.double_well import flow_paper_double_well

    dw = flow_paper_double_well()
    assert dw.kT == pytest.approx(1.0, rel=1e-12)
    x = torch.tensor(np.random.default_rng(1).normal(0, 2, (50, 2)))
    pos = torch.nn.functional.pad(x, (0, 1))[:, None, :]
    u = DoubleWellEnergy(dw)(pos)
    paper = x[:, 0] ** 4 / 4 - 3 * x[:, 0] ** 2 + x[:, 0] + x[:, 1] ** 2 / 2
    torch.testing.assert_close(u - paper, torch.full_like(u, 9.0))  # a constant offset only
    assert dw.mode_weights()[0] == pytest.approx(0.99165, abs=5e-6)


def test_gaussian_mixture_energies_match_closed_forms():
    from scipy.stats import multivariate_normal

    from latentlab.testing import GaussianMixture2D
    from latentlab.testing.gaussian_mixture import ConditionalGaussianMixture

    gm = GaussianMixture2D()
    e = GaussianMixtureEnergy(gm.weights, gm.means, gm.covariances, gm.kT)
    pos, _ = gm.sample(200, seed=3)
    flat = pos.clone()
    flat[:, 0, 2] = 0.0  # the flow system reads (x, y) only
    ref = gm.energy(pos) - 0.5 * gm.k_z * pos[:, 0, 2] ** 2
    torch.testing.assert_close(e(flat), ref)
    f = e.forces(flat)
    torch.testing.assert_close(f[:, 0, :2], gm.forces(flat)[:, 0, :2])

    cm = ConditionalGaussianMixture()
    e20 = GaussianMixtureEnergy(cm.weights, cm.means, cm.covariances, cm.kT, cm.cond_matrix, cm.cond_std)
    y = torch.as_tensor(cm.sample_flat(100, seed=1))
    assert e20.n_atoms == 7
    logp = np.log(sum(w * multivariate_normal(m, c).pdf(y[:, :10].numpy())
                      for w, m, c in zip(cm.weights, cm.means, cm.covariances)))
    logp += multivariate_normal(np.zeros(10), cm.cond_std**2 * np.eye(10)).logpdf(
        (y[:, 10:] - y[:, :10] @ torch.as_tensor(cm.cond_matrix).T).numpy())
    np.testing.assert_allclose(e20.log_density(y).numpy(), logp, rtol=1e-10, atol=1e-8)
    # exact samples fall into their own component
    r = e20.responsibilities(y)
    assert torch.allclose(r.max(-1).values, torch.ones(100, dtype=r.dtype), atol=1e-6)
