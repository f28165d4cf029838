"""Three atoms with two harmonic bonds and a cos^2 angle term (docs/theory.md section 2).

    U = 1/2 k_bond (r1 - r0)^2 + 1/2 k_bond (r2 - r0)^2 + 1/2 k_cos cos^2

with ``r1 = |a - b|``, ``r2 = |c - b|`` and ``cos`` the cosine of the angle at
the vertex b.  Mapped by :class:`latentlab.maps.TriangleMap`, the marginal
factorises: ``p(r) ~ r^2 exp(-beta k_bond (r - r0)^2 / 2)`` for each bond and
``p(cos) ~ exp(-beta k_cos cos^2 / 2)`` on [-1, 1] (the r^2 comes from the
Cartesian volume element, cos has uniform measure), so
``A_pmf(Q) = U(Q) - 2 kT ln r1 - 2 kT ln r2 + const``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import integrate

from latentlab.maps.geometry import random_rotations
from latentlab.maps.internal import TriangleMap
from latentlab.testing._base import AnalyticSystem
from latentlab.units import KB
from latentlab.validation import check_positive, fail


def _default_k_cos() -> float:
    # 20 kT cos^2 at 300 K, i.e. 1/2 k_cos cos^2 with k_cos = 40 kT (the reference run of docs/theory.md section 2).
    return 40.0 * KB * 300.0


@dataclass
class ThreeAtomSystem(AnalyticSystem):
    """The three-atom reference system; all parameters in OpenMM units.

    Attributes
    ----------
    masses : tuple of float, amu
        Masses of atoms a, b (vertex), c.
    k_bond : float, kJ/mol/nm^2
    r0 : float, nm
    k_cos : float, kJ/mol
    temperature : float, K
    """

    name = "three-atom"
    n_atoms = 3
    masses: tuple[float, float, float] = (12.0, 14.0, 16.0)
    k_bond: float = 500.0
    r0: float = 0.38
    k_cos: float = field(default_factory=_default_k_cos)
    temperature: float = 300.0

    def __post_init__(self):
        if len(self.masses) != 3:
            fail("masses", f"has {len(self.masses)} entries", "give three masses (a, vertex b, c) in amu")
        for m in self.masses:
            check_positive(m, "masses", "amu")
        self._check_positive({"k_bond": "kJ/mol/nm^2", "r0": "nm"})
        if self.k_cos < 0:
            fail("k_cos", f"got {self.k_cos}", "k_cos must be >= 0 kJ/mol")
        check_positive(self.temperature, "temperature", "K")

    # ------------------------------------------------------------------ basics

    def parameters(self) -> dict:
        return {"masses": list(self.masses), "k_bond": self.k_bond, "r0": self.r0, "k_cos": self.k_cos,
                "temperature": self.temperature}

    def cg_model(self, convention: str = "consistent"):
        """The exact latent model (:class:`latentlab.model.CGModel`): exact PMF and closed-form A(Q)."""
        from latentlab.model import CGModel

        return CGModel.exact(self, convention)

    def cg_map(self) -> TriangleMap:
        """The map ``(r1, r2, cos)`` with atom 1 as the vertex."""
        return TriangleMap(0, 1, 2, n_atoms=3, spec="triangle:0,1,2")

    def masses_tensor(self, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.tensor(self.masses, dtype=dtype, device=device)

    # ------------------------------------------------------------------ energies
    def energy_of_cg(self, Q: torch.Tensor) -> torch.Tensor:
        """``U`` as a function of ``Q = (r1, r2, cos)``, shape ``(n, 3) -> (n,)``, kJ/mol."""
        r1, r2, c = Q[..., 0], Q[..., 1], Q[..., 2]
        return 0.5 * self.k_bond * ((r1 - self.r0) ** 2 + (r2 - self.r0) ** 2) + 0.5 * self.k_cos * c**2

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """``U(q)`` for positions ``(n_frames, 3, 3)`` nm, kJ/mol."""
        return self.energy_of_cg(self.cg_map().evaluate(positions))

    def forces(self, positions: torch.Tensor) -> torch.Tensor:
        """``F = -grad U`` of shape ``(n_frames, 3, 3)``, kJ/mol/nm."""
        x = positions.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.energy(x).sum(), x)
        return -g

    def pmf(self, Q: torch.Tensor) -> torch.Tensor:
        """Exact ``A_pmf(Q) = -kT ln p(Q)`` up to a constant, ``(n, 3) -> (n,)``, kJ/mol."""
        return self.energy_of_cg(Q) - 2.0 * self.kT * (torch.log(Q[..., 0]) + torch.log(Q[..., 1]))

    def pmf_gradient(self, Q: torch.Tensor) -> torch.Tensor:
        """Exact ``dA_pmf/dQ = (k(r1-r0) - 2kT/r1, k(r2-r0) - 2kT/r2, k_cos cos)``, shape ``(n, 3)``."""
        r1, r2, c = Q[..., 0], Q[..., 1], Q[..., 2]
        return torch.stack([self.k_bond * (r1 - self.r0) - 2 * self.kT / r1,
                            self.k_bond * (r2 - self.r0) - 2 * self.kT / r2,
                            self.k_cos * c], dim=-1)

    def effective_mass(self, Q: torch.Tensor) -> torch.Tensor:
        """Closed-form ``A(Q)``, ``(n, 3) -> (n, 3, 3)``."""
        key = (Q.dtype, Q.device)
        cache = self.__dict__.setdefault("_mass_cache", {})
        if key not in cache:
            cache[key] = (self.cg_map(), 1.0 / self.masses_tensor(Q.dtype, Q.device))
        cg_map, inverse_masses = cache[key]
        return cg_map.closed_form_effective_mass(Q, inverse_masses)

    # ------------------------------------------------------------------ exact answers
    def _bond_moment(self, power: int) -> float:
        beta = 1.0 / self.kT
        sigma = (self.kT / self.k_bond) ** 0.5

        def w(r):
            return r**2 * np.exp(-0.5 * beta * self.k_bond * (r - self.r0) ** 2)

        # Integrate over all r > 0 (no truncation: see docs/theory.md section 2); split at r0 for accuracy.
        hi = self.r0 + 40 * sigma
        z = integrate.quad(w, 0, self.r0, epsabs=0, epsrel=1e-13)[0] + integrate.quad(w, self.r0, hi, epsabs=0, epsrel=1e-13)[0]
        m = integrate.quad(lambda r: r**power * w(r), 0, self.r0, epsabs=0, epsrel=1e-13)[0] \
            + integrate.quad(lambda r: r**power * w(r), self.r0, hi, epsabs=0, epsrel=1e-13)[0]
        return m / z

    def _cos_moment(self, power: int) -> float:
        beta = 1.0 / self.kT

        def w(c):
            return np.exp(-0.5 * beta * self.k_cos * c**2)

        z = integrate.quad(w, -1, 1, epsabs=0, epsrel=1e-13)[0]
        return integrate.quad(lambda c: c**power * w(c), -1, 1, epsabs=0, epsrel=1e-13)[0] / z

    def exact_moments(self) -> dict[str, float]:
        """Exact ``mean_r1, var_r1, mean_r2, var_r2, mean_cos, var_cos`` (nm, nm^2, 1) by quadrature."""
        m1 = self._bond_moment(1)
        v = self._bond_moment(2) - m1**2
        return {"mean_r1": m1, "var_r1": v, "mean_r2": m1, "var_r2": v, "mean_cos": 0.0, "var_cos": self._cos_moment(2)}

    # ------------------------------------------------------------------ exact samples
    def sample_cg(self, n: int, seed: int = 0) -> torch.Tensor:
        """Exact samples of ``Q = (r1, r2, cos)``, shape ``(n, 3)``, float64.

        Bond lengths by inverse-CDF sampling of ``r^2 exp(-beta k (r-r0)^2/2)`` on a fine grid
        over ``r0 +- 12 sigma`` (clipped at 0; the tails beyond carry < 1e-30 of the mass);
        cos by inverse CDF of its truncated Gaussian.
        """
        rng = np.random.default_rng(seed)
        beta = 1.0 / self.kT
        sigma = (self.kT / self.k_bond) ** 0.5
        grid = np.linspace(max(1e-9, self.r0 - 12 * sigma), self.r0 + 12 * sigma, 200001)
        pdf = grid**2 * np.exp(-0.5 * beta * self.k_bond * (grid - self.r0) ** 2)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
        cdf /= cdf[-1]
        r = np.interp(rng.random((n, 2)), cdf, grid)
        cgrid = np.linspace(-1, 1, 200001)
        cpdf = np.exp(-0.5 * beta * self.k_cos * cgrid**2)
        ccdf = np.concatenate([[0.0], np.cumsum(0.5 * (cpdf[1:] + cpdf[:-1]) * np.diff(cgrid))])
        ccdf /= ccdf[-1]
        c = np.interp(rng.random(n), ccdf, cgrid)
        return torch.from_numpy(np.column_stack([r, c]))

    def positions_from_cg(self, Q: torch.Tensor, seed: int = 0, spread: float = 1.0) -> torch.Tensor:
        """Cartesian positions ``(n, 3, 3)`` nm realising ``Q``, with random rotations and translations.

        The vertex b is placed uniformly in a box of side ``spread`` nm; the
        orientation is uniformly random (Haar) so the frames are exact samples
        of the full configurational distribution when ``Q`` is.
        """
        gen = torch.Generator().manual_seed(seed)
        n = Q.shape[0]
        r1, r2, c = Q[:, 0], Q[:, 1], Q[:, 2]
        s = torch.sqrt(torch.clamp(1 - c**2, min=0.0))
        zero = torch.zeros_like(r1)
        a = torch.stack([r1, zero, zero], -1)
        cc = torch.stack([r2 * c, r2 * s, zero], -1)
        body = torch.stack([a, torch.zeros_like(a), cc], 1)  # (n, 3, 3), b at origin
        qm = random_rotations(n, gen, Q.dtype)
        shift = spread * torch.rand(n, 1, 3, generator=gen, dtype=Q.dtype)
        return body @ qm.transpose(1, 2) + shift

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Boltzmann samples: positions ``(n, 3, 3)`` nm and forces ``(n, 3, 3)`` kJ/mol/nm."""
        x = self.positions_from_cg(self.sample_cg(n, seed), seed=seed + 1)
        return x, self.forces(x)
