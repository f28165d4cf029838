"""The 2-D analytic systems: forces, exact samples, marginals, mode weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from latentlab.testing.double_well import DoubleWell2D
from latentlab.testing.gaussian_mixture import GaussianMixture2D

SYSTEMS = [DoubleWell2D(), GaussianMixture2D()]


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: type(s).__name__)
def test_forces_are_minus_autograd_gradient(system):
    x = torch.randn(64, 1, 3, dtype=torch.float64) * 0.4
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(system.energy(x).sum(), x)
    torch.testing.assert_close(system.forces(x.detach()), -g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: type(s).__name__)
def test_marginals_are_normalised_and_match_the_joint(system):
    assert integrate.quad(system.marginal_x, -5, 5, limit=200)[0] == pytest.approx(1.0, abs=1e-8)
    assert integrate.quad(system.marginal_y, -5, 5, limit=200)[0] == pytest.approx(1.0, abs=1e-8)
    x0 = 0.3
    px = integrate.quad(lambda y: float(system.density_xy(x0, y)), -5, 5, limit=200)[0]
    assert px == pytest.approx(float(system.marginal_x(x0)), rel=1e-6)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: type(s).__name__)
def test_exact_samples_match_moments_by_z_score(system):
    n = 40000
    pos, frc = system.sample(n, seed=11)
    assert pos.shape == (n, 1, 3) and frc.shape == (n, 1, 3)
    x, y = pos[:, 0, 0].numpy(), pos[:, 0, 1].numpy()
    m = system.exact_moments()
    for name, data in (("x", x), ("y", y)):
        z = (data.mean() - m[f"mean_{name}"]) / np.sqrt(m[f"var_{name}"] / n)
        assert abs(z) < 4, (name, z)
        assert data.var() == pytest.approx(m[f"var_{name}"], rel=0.03)
    # z is harmonic with variance kT/k_z
    assert pos[:, 0, 2].var().item() == pytest.approx(system.kT / system.k_z, rel=0.03)


def test_double_well_mode_weights_match_samples():
    dw = DoubleWell2D()
    w = dw.mode_weights()
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[1]  # the positive tilt favours x < 0
    pos, _ = dw.sample(40000, seed=2)
    frac = float((pos[:, 0, 0] < 0).double().mean())
    assert abs(frac - w[0]) < 4 * np.sqrt(w[0] * w[1] / 40000)


def test_gaussian_mixture_sample_histogram_matches_density():
    gm = GaussianMixture2D()
    pos, _ = gm.sample(100000, seed=5)
    hist, edges = np.histogram(pos[:, 0, 0].numpy(), bins=30, range=(-1, 1), density=True)
    centers = 0.5 * (edges[1:] + edges[:-1])
    exact = gm.marginal_x(centers)
    err = np.sqrt(exact / (100000 * np.diff(edges))) + 1e-3
    assert np.max(np.abs(hist - exact) / err) < 5


@pytest.mark.parametrize("bad, match", [
    (dict(weights=[0.5, 0.6, -0.1]), "weights"),
    (dict(means=[[0, 0]]), "means"),
    (dict(temperature=0), "temperature"),
])
def test_gaussian_mixture_rejects_bad_parameters(bad, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture2D(**bad)


def test_double_well_rejects_bad_parameters():
    with pytest.raises(ValueError, match="barrier"):
        DoubleWell2D(barrier=-1.0)
    with pytest.raises(ValueError, match="n"):
        DoubleWell2D().sample(0)
