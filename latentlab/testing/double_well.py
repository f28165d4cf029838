"""A 2-D double well with exact answers (docs/theory.md, "Analytic systems for tests").

One particle in 3-D; the physics lives in (x, y), z is an independent stiff
harmonic coordinate so that the data look like any other data set
(positions ``(n_frames, 1, 3)``)::

    U(x, y, z) = h (x^2 / s^2 - 1)^2 + c x + 1/2 k_y y^2 + 1/2 k_z z^2

``h`` is the barrier height (kJ/mol) at x = 0 relative to the minima of the
untilted well at ``x = +-s`` (nm), ``c`` (kJ/mol/nm) tilts it so that the
two modes have different weights.  x, y and z are independent under the
Boltzmann density ``exp(-U/kT)``: y and z are Gaussian with variances
``kT/k_y`` and ``kT/k_z``, x has the 1-D density ``exp(-U_x/kT)/Z_x``
computed by quadrature.  Exact samples of x come from rejection sampling with
a Gaussian envelope whose bound is found on a fine grid and padded by 5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate

from latentlab.testing._base import AnalyticSystem
from latentlab.units import KB
from latentlab.validation import fail


@dataclass
class DoubleWell2D(AnalyticSystem):
    """The 2-D double well; parameters in OpenMM units (each field's unit beside it)."""

    barrier: float = 12.0      #: kJ/mol, h
    s: float = 0.5             #: nm, minima of the untilted well at x = +-s
    tilt: float = 2.0          #: kJ/mol/nm, c
    k_y: float = 200.0         #: kJ/mol/nm^2
    k_z: float = 1000.0        #: kJ/mol/nm^2
    temperature: float = 300.0  #: K
    mass: float = 12.0         #: amu, of the one particle (only needed for dynamics)

    n_atoms = 1

    def __post_init__(self):
        self._check_positive({"barrier": "kJ/mol", "s": "nm", "k_y": "kJ/mol/nm^2", "k_z": "kJ/mol/nm^2",
                              "temperature": "K", "mass": "amu"})
        if not np.isfinite(self.tilt):
            fail("tilt", f"got {self.tilt}", "pass a finite number in kJ/mol/nm")

    # ------------------------------------------------------------------ energy and forces
    def energy_x(self, x):
        """``U_x(x) = h (x^2/s^2 - 1)^2 + c x`` (numpy or torch), kJ/mol."""
        return self.barrier * (x**2 / self.s**2 - 1.0) ** 2 + self.tilt * x

    def energy_xy(self, x, y):
        """``U(x, y)`` without the z term, kJ/mol."""
        return self.energy_x(x) + 0.5 * self.k_y * y**2

    def energy(self, positions) -> torch.Tensor:
        """``U`` for positions ``(n_frames, 1, 3)`` nm, kJ/mol, shape (n_frames,)."""
        p = torch.as_tensor(positions)
        x, y, z = p[:, 0, 0], p[:, 0, 1], p[:, 0, 2]
        return self.energy_xy(x, y) + 0.5 * self.k_z * z**2

    def forces(self, positions) -> torch.Tensor:
        """``F = -grad U``, shape (n_frames, 1, 3), kJ/mol/nm (closed form)."""
        p = torch.as_tensor(positions)
        x, y, z = p[:, 0, 0], p[:, 0, 1], p[:, 0, 2]
        fx = -(4.0 * self.barrier * x * (x**2 / self.s**2 - 1.0) / self.s**2 + self.tilt)
        return torch.stack([fx, -self.k_y * y, -self.k_z * z], dim=-1)[:, None, :]

    # ------------------------------------------------------------------ exact answers
    def _x_range(self) -> tuple[float, float]:
        # beyond |x| = 3 s the quartic exceeds 64 h + 3 s |c|: negligible for any sane parameters
        return -4.0 * self.s, 4.0 * self.s

    def _zx(self) -> float:
        key = ("zx", self.barrier, self.s, self.tilt, self.temperature)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = self._zx_uncached()
        return cache[key]

    def _zx_uncached(self) -> float:
        lo, hi = self._x_range()
        w = lambda x: np.exp(-(self.energy_x(x) - self._umin()) / self.kT)  # noqa: E731
        return integrate.quad(w, lo, hi, points=[-self.s, 0.0, self.s], epsabs=0, epsrel=1e-12, limit=200)[0]

    def _umin(self) -> float:
        """Minimum of U_x on a fine grid (a shift that keeps exp(-U/kT) in range), cached."""
        key = ("umin", self.barrier, self.s, self.tilt)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            grid = np.linspace(*self._x_range(), 200001)
            cache[key] = float(self.energy_x(grid).min())
        return cache[key]

    def marginal_x(self, x) -> np.ndarray:
        """Exact normalised density p(x), 1/nm."""
        x = np.asarray(x, dtype=np.float64)
        return np.exp(-(self.energy_x(x) - self._umin()) / self.kT) / self._zx()

    def marginal_y(self, y) -> np.ndarray:
        """Exact normalised density p(y) (Gaussian, variance kT/k_y), 1/nm."""
        var = self.kT / self.k_y
        y = np.asarray(y, dtype=np.float64)
        return np.exp(-0.5 * y**2 / var) / np.sqrt(2 * np.pi * var)

    def density_xy(self, x, y) -> np.ndarray:
        """Exact normalised density p(x, y), 1/nm^2."""
        return self.marginal_x(x) * self.marginal_y(y)

    def free_energy_xy(self, x, y) -> np.ndarray:
        """``-ln p(x, y)`` in kT (the exact 2-D free-energy surface, up to the normalisation)."""
        return -np.log(self.density_xy(x, y))

    def mode_weights(self) -> np.ndarray:
        """Exact probabilities of the modes ``x < 0`` and ``x > 0``, shape (2,)."""
        lo, hi = self._x_range()
        w = lambda x: np.exp(-(self.energy_x(x) - self._umin()) / self.kT)  # noqa: E731
        left = integrate.quad(w, lo, 0.0, points=[-self.s], epsabs=0, epsrel=1e-12, limit=200)[0]
        right = integrate.quad(w, 0.0, hi, points=[self.s], epsabs=0, epsrel=1e-12, limit=200)[0]
        return np.array([left, right]) / (left + right)

    def exact_moments(self) -> dict[str, float]:
        """Exact mean and variance of x and y (nm, nm^2)."""
        lo, hi = self._x_range()
        z = self._zx()
        w = lambda x: np.exp(-(self.energy_x(x) - self._umin()) / self.kT) / z  # noqa: E731
        m1 = integrate.quad(lambda x: x * w(x), lo, hi, points=[-self.s, 0, self.s], epsabs=0, epsrel=1e-12, limit=200)[0]
        m2 = integrate.quad(lambda x: x * x * w(x), lo, hi, points=[-self.s, 0, self.s], epsabs=0, epsrel=1e-12, limit=200)[0]
        return {"mean_x": m1, "var_x": m2 - m1**2, "mean_y": 0.0, "var_y": self.kT / self.k_y}

    # ------------------------------------------------------------------ exact samples
    def sample_x(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Exact samples of x by rejection from a Gaussian envelope N(0, (1.5 s)^2)."""
        sigma = 1.5 * self.s
        grid = np.linspace(-8 * self.s, 8 * self.s, 400001)
        log_target = -(self.energy_x(grid) - self._umin()) / self.kT
        log_env = -0.5 * grid**2 / sigma**2
        log_m = float((log_target - log_env).max()) + np.log(1.05)
        out = np.empty(0)
        while out.size < n:
            m = max(1024, 2 * (n - out.size))
            x = rng.normal(0.0, sigma, m)
            log_acc = -(self.energy_x(x) - self._umin()) / self.kT - (-0.5 * x**2 / sigma**2) - log_m
            out = np.concatenate([out, x[np.log(rng.random(m)) < log_acc]])
        return out[:n]

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Boltzmann samples: positions ``(n, 1, 3)`` nm and forces ``(n, 1, 3)`` kJ/mol/nm, float64."""
        if int(n) < 1:
            fail("n", f"got {n}", "ask for at least one sample")
        rng = np.random.default_rng(seed)
        x = self.sample_x(int(n), rng)
        y = rng.normal(0.0, np.sqrt(self.kT / self.k_y), n)
        z = rng.normal(0.0, np.sqrt(self.kT / self.k_z), n)
        pos = torch.from_numpy(np.stack([x, y, z], axis=-1)[:, None, :])
        return pos, self.forces(pos)


def flow_paper_double_well() -> DoubleWell2D:
    """The double well of Stupp & Koutsourelakis, ``U = x1^4/4 - 3 x1^2 + x1 + x2^2/2`` at ``kT = 1``.

    "Energy-based coarse-graining in molecular dynamics: a flow-based framework
    without data" (JCTC 2025, arXiv 2504.20940) use it with beta = 1.  In
    latentlab units: ``h (x^2/s^2 - 1)^2 = x^4/4 - 3 x^2 + 9`` for ``s = sqrt 6``,
    ``h = 9`` kJ/mol (the constant 9 changes nothing), tilt 1 kJ/mol/nm,
    ``k_y = 1`` kJ/mol/nm^2 and ``T = 1/k_B`` K so that ``kT = 1`` kJ/mol.
    Exact ``P(x1 < 0) = 0.99165`` (:meth:`DoubleWell2D.mode_weights`).
    """
    return DoubleWell2D(barrier=9.0, s=float(np.sqrt(6.0)), tilt=1.0, k_y=1.0, k_z=1.0, temperature=1.0 / KB)
