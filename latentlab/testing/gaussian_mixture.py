"""A 2-D Gaussian mixture with exact answers (docs/theory.md, "Analytic systems for tests").

One particle in 3-D with positions ``(n_frames, 1, 3)``.  The (x, y)
Boltzmann density *is* the mixture ``p(x, y) = sum_k w_k N((x, y); mu_k, S_k)``,
i.e. the potential is defined as ``U(x, y) = -kT ln p(x, y)``; z is an
independent harmonic coordinate ``1/2 k_z z^2``.  Forces are
``F = -grad U = kT grad p / p`` (closed form, computed with log-sum-exp so
they stay finite far from the modes).  Exact samples are drawn directly (pick
a component with probability ``w_k``, then a Gaussian); marginals are
Gaussian mixtures in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from latentlab.testing._base import AnalyticSystem
from latentlab.units import KB
from latentlab.validation import fail


def _default_means():
    return [[-0.5, -0.2], [0.45, 0.35], [0.2, -0.55]]


def _default_covs():
    return [[[0.02, 0.006], [0.006, 0.012]], [[0.015, -0.004], [-0.004, 0.02]], [[0.01, 0.0], [0.0, 0.01]]]


@dataclass
class GaussianMixture2D(AnalyticSystem):
    """Mixture parameters (nm, nm^2) and temperature (K).

    Attributes
    ----------
    weights : list of float, shape=(K,), sum 1
    means : list, shape=(K, 2), nm
    covariances : list, shape=(K, 2, 2), nm^2, symmetric positive definite
    k_z : float, kJ/mol/nm^2
    temperature : float, K
    mass : float, amu
    """

    weights: list = field(default_factory=lambda: [0.5, 0.3, 0.2])
    means: list = field(default_factory=_default_means)
    covariances: list = field(default_factory=_default_covs)
    k_z: float = 1000.0
    temperature: float = 300.0
    mass: float = 12.0

    n_atoms = 1

    def __post_init__(self):
        w = np.asarray(self.weights, dtype=np.float64)
        mu = np.asarray(self.means, dtype=np.float64)
        cov = np.asarray(self.covariances, dtype=np.float64)
        k = w.shape[0]
        if w.ndim != 1 or k < 1 or (w <= 0).any() or abs(w.sum() - 1.0) > 1e-9:
            fail("weights", f"got {self.weights}", "pass K > 0 positive weights that sum to 1")
        if mu.shape != (k, 2):
            fail("means", f"has shape {mu.shape}, expected ({k}, 2)", "pass one (x, y) mean per component, nm")
        if cov.shape != (k, 2, 2) or not np.allclose(cov, cov.transpose(0, 2, 1)):
            fail("covariances", f"has shape {cov.shape} or is not symmetric, expected ({k}, 2, 2)", "pass symmetric 2x2 covariances, nm^2")
        if (np.linalg.eigvalsh(cov) <= 0).any():
            fail("covariances", "are not positive definite", "pass positive-definite covariances")
        self._check_positive({"k_z": "kJ/mol/nm^2", "temperature": "K", "mass": "amu"})
        self._w, self._mu, self._cov = w, mu, cov
        self._prec = np.linalg.inv(cov)
        self._lognorm = -np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(cov))


    # ------------------------------------------------------------------ densities
    def _log_components(self, xy: torch.Tensor) -> torch.Tensor:
        """``ln w_k + ln N(xy; mu_k, S_k)``, (n, 2) -> (n, K)."""
        mu = torch.as_tensor(self._mu, dtype=xy.dtype)
        prec = torch.as_tensor(self._prec, dtype=xy.dtype)
        d = xy[:, None, :] - mu[None]  # (n, K, 2)
        quad = torch.einsum("nki,kij,nkj->nk", d, prec, d)
        return torch.as_tensor(np.log(self._w) + self._lognorm, dtype=xy.dtype) - 0.5 * quad

    def log_density_xy(self, xy) -> torch.Tensor:
        """``ln p(x, y)``, (n, 2) -> (n,)."""
        xy = torch.as_tensor(xy, dtype=torch.float64)
        return torch.logsumexp(self._log_components(xy), dim=-1)

    def density_xy(self, x, y) -> np.ndarray:
        """Exact p(x, y) on broadcast arrays x, y (nm), 1/nm^2."""
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        xy = torch.from_numpy(np.stack([x.ravel(), y.ravel()], -1))
        return np.exp(self.log_density_xy(xy).numpy()).reshape(x.shape)

    def free_energy_xy(self, x, y) -> np.ndarray:
        """``-ln p(x, y)`` in kT."""
        return -np.log(self.density_xy(x, y))

    def marginal_x(self, x) -> np.ndarray:
        """Exact p(x), 1/nm (a 1-D Gaussian mixture)."""
        x = np.asarray(x, dtype=np.float64)[..., None]
        var = self._cov[:, 0, 0]
        return (self._w * np.exp(-0.5 * (x - self._mu[:, 0]) ** 2 / var) / np.sqrt(2 * np.pi * var)).sum(-1)

    def marginal_y(self, y) -> np.ndarray:
        """Exact p(y), 1/nm."""
        y = np.asarray(y, dtype=np.float64)[..., None]
        var = self._cov[:, 1, 1]
        return (self._w * np.exp(-0.5 * (y - self._mu[:, 1]) ** 2 / var) / np.sqrt(2 * np.pi * var)).sum(-1)

    def mode_weights(self) -> np.ndarray:
        """Component weights ``w_k`` (the exact probability of each component), shape (K,)."""
        return self._w.copy()

    def exact_moments(self) -> dict[str, float]:
        mean = (self._w[:, None] * self._mu).sum(0)
        second = (self._w[:, None, None] * (self._cov + self._mu[:, :, None] * self._mu[:, None, :])).sum(0)
        cov = second - np.outer(mean, mean)
        return {"mean_x": mean[0], "mean_y": mean[1], "var_x": cov[0, 0], "var_y": cov[1, 1], "cov_xy": cov[0, 1]}

    # ------------------------------------------------------------------ energy and forces
    def energy(self, positions) -> torch.Tensor:
        """``U = -kT ln p(x, y) + 1/2 k_z z^2`` for positions ``(n, 1, 3)``, kJ/mol, shape (n,)."""
        p = torch.as_tensor(positions, dtype=torch.float64)
        return -self.kT * self.log_density_xy(p[:, 0, :2]) + 0.5 * self.k_z * p[:, 0, 2] ** 2

    def forces(self, positions) -> torch.Tensor:
        """``F = -grad U``, shape (n, 1, 3), kJ/mol/nm: ``kT sum_k r_k(x) (-S_k^-1 (x - mu_k))``."""
        p = torch.as_tensor(positions, dtype=torch.float64)
        xy = p[:, 0, :2]
        logc = self._log_components(xy)  # (n, K)
        resp = torch.softmax(logc, dim=-1)  # responsibilities r_k
        d = xy[:, None, :] - torch.as_tensor(self._mu)[None]
        grad_log = -torch.einsum("kij,nkj->nki", torch.as_tensor(self._prec), d)  # (n, K, 2)
        fxy = self.kT * (resp[..., None] * grad_log).sum(1)
        fz = -self.k_z * p[:, 0, 2:3]
        return torch.cat([fxy, fz], dim=-1)[:, None, :]

    # ------------------------------------------------------------------ exact samples
    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact samples: positions ``(n, 1, 3)`` nm and forces ``(n, 1, 3)`` kJ/mol/nm, float64."""
        if int(n) < 1:
            fail("n", f"got {n}", "ask for at least one sample")
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self._w), size=n, p=self._w)
        chol = np.linalg.cholesky(self._cov)  # (K, 2, 2)
        xy = self._mu[comp] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, 2)))
        z = rng.normal(0.0, np.sqrt(self.kT / self.k_z), n)
        pos = torch.from_numpy(np.column_stack([xy, z])[:, None, :])
        return pos, self.forces(pos)


@dataclass
class ConditionalGaussianMixture(AnalyticSystem):
    """A mixture on slow coordinates with a conditional Gaussian on fast ones (exact answers).

    ``p(x_s, x_f) = sum_k w_k N(x_s; m_k, std^2 I) N(x_f; B x_s, cond_std^2 I)``: the
    20-D benchmark of Stupp & Koutsourelakis ("Energy-based coarse-graining in
    molecular dynamics: a flow-based framework without data", JCTC 2025) with
    ``n_slow = n_fast = 10``, 3 equally weighted components, ``std = cond_std = 0.1``,
    means uniform in [-1, 1]^n_slow (drawn like scikit-learn's ``make_blobs`` with
    ``random_state=seed``: ``RandomState(seed).uniform(-1, 1, (K, n_slow))``) and B
    standard normal (``RandomState(cond_seed)``; the authors draw it with JAX, so
    B differs from theirs).  The potential is ``U = -kT ln p`` with
    ``T = 1/k_B`` (``kT = 1`` kJ/mol, the authors' beta = 1).
    """

    n_slow: int = 10              #: dimension of x_s
    n_fast: int = 10              #: dimension of x_f (0: the mixture alone)
    n_components: int = 3         #: K
    std: float = 0.1              #: nm, of each component
    cond_std: float = 0.1         #: nm, of x_f around B x_s
    seed: int = 6                 #: of the means m_k
    cond_seed: int = 1            #: of B
    temperature: float = 1.0 / KB  #: K

    def __post_init__(self):
        self._check_counts(("n_slow", "n_components"))
        self._check_counts(("n_fast",), minimum=0, fix="pass 0 or a positive integer")
        self._check_positive({"std": "nm", "cond_std": "nm", "temperature": "K"})
        self.means = np.random.RandomState(self.seed).uniform(-1.0, 1.0, (self.n_components, self.n_slow))
        self.cond_matrix = np.random.RandomState(self.cond_seed).standard_normal((self.n_fast, self.n_slow))
        self.weights = np.full(self.n_components, 1.0 / self.n_components)

    @property
    def dim(self) -> int:
        return self.n_slow + self.n_fast

    @property
    def covariances(self) -> np.ndarray:
        """``(K, n_slow, n_slow)`` nm^2."""
        return np.stack([np.eye(self.n_slow) * self.std**2] * self.n_components)

    def mode_weights(self) -> np.ndarray:
        """Exact component weights, shape (K,)."""
        return self.weights.copy()

    def sample_flat(self, n: int, seed: int = 0) -> np.ndarray:
        """Exact samples of the flat coordinates, shape ``(n, n_slow + n_fast)``, nm."""
        if int(n) < 1:
            fail("n", f"got {n}", "ask for at least one sample")
        rng = np.random.default_rng(seed)
        comp = rng.choice(self.n_components, size=n, p=self.weights)
        xs = self.means[comp] + self.std * rng.standard_normal((n, self.n_slow))
        xf = xs @ self.cond_matrix.T + self.cond_std * rng.standard_normal((n, self.n_fast))
        return np.concatenate([xs, xf], axis=1)
