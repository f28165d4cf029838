"""Analytic potentials as batched torch energies (the flow benchmarks with exact answers).

The systems are 2-D or 20-D; like every latentlab data set they are stored as
positions ``(n_frames, n_atoms, 3)``: the flat coordinates fill x, y, z of
atom 0, then atom 1, ... and unused trailing entries are 0 (the energy does not
depend on them).  Parameters are buffers (``.to(device, dtype)`` moves them).

* :class:`DoubleWellEnergy` — ``U = h (x^2/s^2 - 1)^2 + c x + k_y y^2 / 2``
  (:class:`latentlab.testing.DoubleWell2D`); with ``h = 9, s = sqrt 6, c = 1,
  k_y = 1`` it is the double well ``x1^4/4 - 3 x1^2 + x1 + x2^2/2`` of
  Stupp & Koutsourelakis (up to the constant 9).
* :class:`GaussianMixtureEnergy` — ``U = -kT ln p(x)`` for a Gaussian mixture
  over the first ``n_slow`` coordinates, optionally times a conditional Gaussian
  ``N(B x_slow, cond_std^2 I)`` of the remaining ones (the authors' 20-D system;
  :class:`latentlab.testing.ConditionalGaussianMixture`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentlab.energies.base import Energy
from latentlab.validation import fail


def flat_to_positions(y: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Flat coordinates ``(..., dim)`` -> positions ``(..., n_atoms, 3)``, zero-padded."""
    pad = 3 * n_atoms - y.shape[-1]
    if pad < 0:
        fail("coordinates", f"have {y.shape[-1]} entries, more than 3 x {n_atoms} atoms", "pass fewer coordinates")
    return torch.nn.functional.pad(y, (0, pad)).reshape(*y.shape[:-1], n_atoms, 3)


class FlatEnergy(Energy):
    """An energy of the first ``dim`` flat coordinates of positions ``(n_frames, ceil(dim/3), 3)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.n_atoms = -(-self.dim // 3)

    def flat_energy(self, y: torch.Tensor) -> torch.Tensor:
        """``U`` of flat coordinates ``(n_frames, dim)``, kJ/mol (subclasses)."""
        raise NotImplementedError

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        return self.flat_energy(positions.flatten(-2)[..., :self.dim])


class DoubleWellEnergy(FlatEnergy):
    """``U(x, y) = h (x^2/s^2 - 1)^2 + c x + k_y y^2/2`` kJ/mol on (x, y) = positions[:, 0, :2].

    Parameters
    ----------
    system : latentlab.testing.DoubleWell2D
        Supplies ``barrier`` h (kJ/mol), ``s`` (nm), ``tilt`` c (kJ/mol/nm), ``k_y`` (kJ/mol/nm^2).
    """

    def __init__(self, system):
        super().__init__(2)
        self.system = system

    def flat_energy(self, y):
        return self.system.energy_xy(y[..., 0], y[..., 1])


class GaussianMixtureEnergy(FlatEnergy):
    """``U = -kT ln p(x)``: a Gaussian mixture on ``x_slow``, times ``N(x_fast; B x_slow, cond_std^2 I)``.

    Parameters
    ----------
    weights : array, shape=(K,)
    means : array, shape=(K, n_slow), nm
    covariances : array, shape=(K, n_slow, n_slow), nm^2
    kT : float, kJ/mol
    cond_matrix : array, shape=(n_fast, n_slow), optional
    cond_std : float, nm
    """

    def __init__(self, weights, means, covariances, kT: float, cond_matrix=None, cond_std: float = 0.1):
        mu = np.asarray(means, dtype=np.float64)
        cov = np.asarray(covariances, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        n_slow = mu.shape[1]
        b = None if cond_matrix is None else np.asarray(cond_matrix, dtype=np.float64)
        super().__init__(n_slow + (0 if b is None else b.shape[0]))
        self.kT = float(kT)
        self.n_slow = n_slow
        self.cond_std = float(cond_std)
        chol = np.linalg.cholesky(cov)
        self.register_buffer("log_weights", torch.as_tensor(np.log(w)))
        self.register_buffer("means", torch.as_tensor(mu))
        self.register_buffer("precision_chol", torch.as_tensor(np.linalg.inv(chol)))  # L^-1
        self.register_buffer("log_norm", torch.as_tensor(-0.5 * n_slow * math.log(2 * math.pi)
                                                         - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)))
        self.register_buffer("cond_matrix", torch.as_tensor(b if b is not None else np.zeros((0, n_slow))))

    def log_components(self, x_slow: torch.Tensor) -> torch.Tensor:
        """``ln w_k + ln N(x_slow; mu_k, S_k)``, ``(n, n_slow) -> (n, K)``."""
        d = x_slow[:, None, :] - self.means.to(x_slow)  # (n, K, n_slow)
        white = torch.einsum("kij,nkj->nki", self.precision_chol.to(x_slow), d)
        return (self.log_weights + self.log_norm).to(x_slow) - 0.5 * (white * white).sum(-1)

    def responsibilities(self, y: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each component ``(n, K)`` for flat coordinates ``(n, dim)``."""
        return torch.softmax(self.log_components(y[..., :self.n_slow]), dim=-1)

    def log_density(self, y: torch.Tensor) -> torch.Tensor:
        """``ln p(y)`` for flat coordinates ``(n, dim)``."""
        xs = y[..., :self.n_slow]
        lp = torch.logsumexp(self.log_components(xs), dim=-1)
        n_fast = self.cond_matrix.shape[0]
        if n_fast:
            r = (y[..., self.n_slow:] - xs @ self.cond_matrix.to(y).T) / self.cond_std
            lp = lp - 0.5 * (r * r).sum(-1) - n_fast * (math.log(self.cond_std) + 0.5 * math.log(2 * math.pi))
        return lp

    def flat_energy(self, y):
        return -self.kT * self.log_density(y)
