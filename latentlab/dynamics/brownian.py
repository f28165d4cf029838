"""Overdamped (Brownian) latent dynamics: the high-friction limit of latent Langevin.

When the momenta relax much faster than Q moves, ``H = 1/2 P^T A(Q) P + V(Q)`` with the friction
tensor ``G`` of :mod:`latentlab.dynamics.langevin` reduces to a diffusion on the free energy

    F(Q) = V(Q) + kT/2 ln det A(Q)

(the Q-marginal of ``exp(-H/kT)``: the momenta integrate to ``det A^-1/2``).  In Ito form, with the
diffusion tensor ``D = kT G^-1``::

    coordinate friction (G = gamma I):      dQ = -grad F / gamma dt + sqrt(2 kT / gamma) dW
    atomic friction (G = gamma A^-1):       dQ = [-A grad F + kT div A] / gamma dt + sqrt(2 kT / gamma) A^1/2 dW

``(div A)_i = sum_j dA_ij / dQ_j`` is the drift a position-dependent diffusion needs for
``exp(-F/kT)`` to stay stationary.  With atomic friction ``D = kT A / gamma`` is the atoms' own
diffusion ``kT / (m gamma)`` carried through the map (``D = J (kT M^-1 / gamma) J^T``).

Each step is one Euler-Maruyama step (weak order 1: averages carry an error proportional to dt),
with reflection at bounds and wrapping of periodic coordinates as in the Langevin sampler.  Large
frictions, where the underdamped integrator would need ``gamma w dt < 1``, are cheap here: the step
is limited only by how fast F changes over the diffusion length ``sqrt(2 D dt)``.

The walkers keep momenta drawn from ``N(0, kT A^-1)`` at every new position (the overdamped
limit's momenta are at equilibrium), so that the kinetic energy and H are defined for reporters;
they carry no dynamics, and the kinetic temperature is no check of the time step here.

References
----------
Ermak & McCammon, J. Chem. Phys. 69, 1352 (1978): Brownian dynamics with a configuration-dependent
diffusion tensor.
Gardiner, Stochastic Methods, 4th ed. (Springer 2009), section 6.3: the Smoluchowski limit.
"""

from __future__ import annotations

import math

import torch

from latentlab.dynamics.eigen import symmetric_eigh
from latentlab.dynamics.langevin import LangevinState, LatentLangevin
from latentlab.validation import fail


class BrownianDynamics(LatentLangevin):
    """Overdamped latent dynamics (see the module docstring); the arguments are those of
    :class:`~latentlab.dynamics.langevin.LatentLangevin` (``metropolis`` is refused, the fixed-point
    settings are not used).

    ``gamma`` must be positive: amu/ps (``friction_model="coordinate"``) or 1/ps (``"atomic"``).
    """

    #: Name of these dynamics; the momenta carry none (the kinetic temperature checks nothing).
    dynamics = "brownian"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.gamma <= 0.0:
            fail("gamma", "is 0", "Brownian dynamics needs a positive friction (the time scale is 1/gamma)")
        if self.metropolis:
            fail("metropolis", "is not available for Brownian dynamics", "drop --metropolis or use the Langevin integrator")

    def free_energy_gradient(self, state: LangevinState) -> torch.Tensor:
        """``grad F = grad V + kT/2 grad ln det A`` at the walkers, ``(W, N)`` kJ/mol per unit of Q.

        ``d ln det A / dQ_k = tr(A^-1 dA/dQ_k)``, with ``A^-1`` from the cached eigen-decomposition.
        """
        w, u = state.eigvals, state.eigvecs
        a_inv = torch.bmm(u / w[:, None, :], u.transpose(1, 2))  # (W, N, N)
        n = w.shape[1]
        trace = torch.bmm(a_inv.reshape(-1, 1, n * n), state.dA.reshape(-1, n * n, n))[:, 0]  # symmetric A^-1
        return state.grad_V + (0.5 * self.kT) * trace

    def _drift_and_noise(self, state: LangevinState):
        """The step's deterministic displacement per ps, ``(W, N)``, and its noise ``sqrt(2 kT dt/gamma) xi``
        shaped by ``A^1/2`` for atomic friction."""
        grad_f = self.free_energy_gradient(state)
        xi = torch.randn(state.Q.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        scale = math.sqrt(2.0 * self.kT * self.dt / self.gamma)
        if self.friction_model == "coordinate":
            return grad_f / -self.gamma, xi * scale
        div_a = torch.diagonal(state.dA, dim1=2, dim2=3).sum(2)  # sum_j dA_ij/dQ_j
        drift = (torch.bmm(state.A, grad_f[:, :, None])[..., 0] - self.kT * div_a) / -self.gamma
        root = torch.bmm(state.eigvecs, (state.eigvals.sqrt() * xi)[:, :, None])[..., 0]  # U w^1/2 xi ~ N(0, A)
        return drift, root * scale

    def step(self, state: LangevinState, n_steps: int = 1) -> LangevinState:
        """Advance all walkers by ``n_steps`` Euler-Maruyama steps in place."""
        for _ in range(int(n_steps)):
            drift, noise = self._drift_and_noise(state)
            q1 = torch.add(state.Q + noise, drift, alpha=self.dt)
            if self._bounded:
                q1, flip = self._reflect(q1)
                state.counters["reflections"] += int(flip.any(1).sum())
            q1 = self._wrap(q1)
            v1, gv1, a1, da1 = self._evaluate(q1)
            w1, u1 = symmetric_eigh(a1)
            healthy = (torch.isfinite(v1) & torch.isfinite(gv1).all(1) & torch.isfinite(q1).all(1)
                       & (w1.amin(1) > 0) & ((v1 - state.V).abs() <= self.blowup_kT * self.kT))
            if bool(healthy.all()):
                state.take(None, q1, v1, gv1, a1, da1, w1, u1)
            else:
                state.take(healthy, q1, v1, gv1, a1, da1, w1, u1)
                self._reseed(state, ~healthy)
            state.P = self._momenta(state.eigvals, state.eigvecs)
            state.kinetic_cache = None
            state.step += 1
            state.counters["steps"] += 1
        return state
