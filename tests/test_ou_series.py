"""The friction step as a power series in A (latentlab.dynamics.ou_series) against the eigen-decomposition."""

import math

import pytest
import torch

from latentlab.dynamics import ou_series
from latentlab.dynamics.langevin import LatentLangevin


def _spd(n_walkers, n, x_max, seed, singular=False):
    """Random SPD matrices scaled so that gamma t times the largest eigenvalue is x_max (gamma t = 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_walkers, n, n, generator=g, dtype=torch.float64)
    a = x @ x.transpose(1, 2)
    if singular:  # one zero eigenvalue (a cosine at +-1 in the triangle map)
        w, u = torch.linalg.eigh(a)
        w[:, 0] = 0.0
        a = u @ torch.diag_embed(w) @ u.transpose(1, 2)
    return a * (x_max / torch.linalg.eigvalsh(a)[:, -1])[:, None, None]


def _exact(a, gamma_t, kT):
    """exp(-gamma t A) and the noise covariance kT A^-1 (1 - exp(-2 gamma t A)) by LAPACK's eigh."""
    w, u = torch.linalg.eigh(a)
    decay = torch.exp(-gamma_t * w)
    # kT (1 - exp(-2 r)) / w, with its limit 2 kT gamma t at w = 0
    var = torch.where(w > 1e-300, kT * -torch.expm1(-2.0 * gamma_t * w) / w.clamp_min(1e-300), 2.0 * kT * gamma_t)
    return u @ torch.diag_embed(decay) @ u.transpose(1, 2), u @ torch.diag_embed(var) @ u.transpose(1, 2)


@pytest.mark.parametrize("n, x_max, singular", [(1, 0.03, False), (2, 0.06, False), (3, 0.06, True), (3, 0.5, False),
                                                (6, 0.3, False)])
def test_series_step_is_the_exact_ou_step(n, x_max, singular):
    """Both the decay exp(-B) and the noise's covariance agree with the eigen-decomposition within the series'
    truncation (TOLERANCE per unit vector; 10x for round-off of the ~20 products and of LAPACK)."""
    a, kT, gamma_t = _spd(64, n, x_max, seed=n, singular=singular), 2.494, 1.0
    a_last = a.permute(1, 2, 0)  # the step takes the walkers last
    terms = ou_series.series_terms(gamma_t * ou_series.norm_bound(a_last))
    assert terms is not None
    decay, cov = _exact(a, gamma_t, kT)
    eye = torch.eye(n, dtype=torch.float64).expand(64, n, n)
    zeros = torch.zeros(64, n, dtype=torch.float64)
    # columns: the step applied to unit momenta without noise, and to unit normals without momentum
    def step(p, xi):
        return ou_series.ou_step(a_last, p.T, xi.T, gamma_t, kT, terms).T

    e_cols = torch.stack([step(eye[:, :, j], zeros) for j in range(n)], dim=2)
    s_cols = torch.stack([step(zeros, eye[:, :, j]) for j in range(n)], dim=2)
    tol = 10 * ou_series.TOLERANCE
    assert float((e_cols - decay).abs().max()) < tol
    assert float((s_cols @ s_cols.transpose(1, 2) - cov).abs().max()) < tol * float(cov.abs().max())
    assert torch.allclose(s_cols, s_cols.transpose(1, 2), atol=1e-14)  # the symmetric square root


def test_series_terms_grow_with_x_and_stop_at_the_limit():
    counts = [ou_series.series_terms(x) for x in (1e-3, 0.03, 0.06, 0.3, 1.0)]
    assert counts == sorted(counts) and counts[1] <= 7 and counts[-1] <= 20
    assert ou_series.series_terms(1.01) is None and ou_series.series_terms(math.nan) is None
    # the coefficients: exp(-x) and sqrt((1 - exp(-2x)) / (2x)) = 1 - x/2 + 5 x^2/24 - x^3/16 + ...
    assert ou_series.ROOT_COEFFICIENTS[:4] == pytest.approx([1.0, -0.5, 5.0 / 24.0, -1.0 / 16.0], rel=1e-14)


def _harmonic_sampler(friction_model, gamma, counter, monkeypatch):
    from latentlab.dynamics import langevin

    real = langevin.symmetric_eigh

    def counting(a):
        counter.append(a.shape[0])
        return real(a)

    monkeypatch.setattr(langevin, "symmetric_eigh", counting)
    a0 = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)

    def mass(q):
        return a0.expand(q.shape[0], 3, 3) * (1.0 + 0.1 * torch.tanh(q[:, :1]))[:, :, None]

    return LatentLangevin(lambda q: 0.5 * (q * q).sum(1), mass, kT=2.494, dt=0.01, gamma=gamma,
                          friction_model=friction_model, seed=0)


def test_the_sampler_takes_the_series_at_usual_frictions_and_the_eigenbasis_otherwise(monkeypatch):
    """Coordinate friction with gamma dt |A| <= 1 needs no eigen-decomposition per step; atomic friction and
    a friction beyond the series' range do (and the walkers stay healthy either way)."""
    for model, gamma, per_step in (("coordinate", 5.0, False), ("coordinate", 200.0, True), ("atomic", 5.0, True)):
        calls = []
        sampler = _harmonic_sampler(model, gamma, calls, monkeypatch)
        state = sampler.init(torch.zeros(3, dtype=torch.float64), n_walkers=32)
        calls.clear()
        sampler.step(state, 20)
        assert (len(calls) >= 20) == per_step, (model, gamma, len(calls))
        assert state.counters["reseeded"] == 0 and bool(torch.isfinite(state.P).all())
