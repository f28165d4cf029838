"""Latent Langevin dynamics with a position-dependent mass.

With ``H(Q, P) = 1/2 P^T A(Q) P + V(Q)`` (docs/theory.md section 4)::

    dQ = A(Q) P dt
    dP = -grad V dt - 1/2 grad_Q (P^T A(Q) P) dt - G(Q) A(Q) P dt + sqrt(2 kT G(Q)) dW

whose stationary density is ``exp(-H / kT)`` for any friction tensor ``G``.  Two
friction models (``friction_model``):

* ``"coordinate"`` (default): ``G = gamma I``, a friction force ``-gamma dQ/dt``
  alike for every coordinate; gamma in amu/ps (for Q in nm), and the momentum
  of A's eigen-direction ``i`` relaxes at the rate ``gamma w_i``.
* ``"atomic"``: ``G = gamma A(Q)^-1``, what a Langevin thermostat with the same
  collision rate ``gamma`` (1/ps) on every atom (OpenMM's LangevinIntegrator)
  becomes under the map: every eigen-direction's momentum relaxes at the rate
  ``gamma``, i.e. one friction ``gamma / w_i`` per eigen-direction of A, and the
  overdamped diffusion tensor is ``kT A(Q) / gamma`` (the atoms' diffusion
  ``kT / (m gamma)`` carried through the map's Jacobian).

One step is ``H(h) O(h)``: the positions of the symmetric splitting ``O(h/2) H(h) O(h/2)`` (two
consecutive half O steps act at the same Q and compose into one O(h) exactly), with the momenta taken after
the whole friction step:

* ``O``: the friction/noise part at fixed Q, solved exactly.  For coordinate friction it is a power series
  in ``B = gamma t A`` (:mod:`latentlab.dynamics.ou_series`: ``exp(-B) P + sqrt(2 kT gamma t) S(B) xi``,
  summed to 1e-10) while ``gamma t |A|`` is at most 1; otherwise, and for atomic friction, in the eigenbasis
  ``A = U diag(w) U^T`` with the relaxation rates ``r_i = gamma w_i`` (coordinate) or ``gamma`` (atomic):
  ``P <- U [exp(-r t) U^T P + sqrt(kT (1 - exp(-2 r t)) / w) xi]``.
* ``H``: the implicit generalized leapfrog (Stormer-Verlet for non-separable
  H, as in Riemannian-manifold HMC): an implicit half kick (quadratic in the
  momentum: one iterate and one Newton step, :meth:`LatentLangevin._half_kick`),
  a fixed-point solve for the new position, an explicit half kick.  It is
  symplectic and time-reversible when the solves converge.
* optional Metropolis test of each H step (generalised HMC): accept with
  ``min(1, exp(-(H1 - H0)/kT))``, otherwise restore Q and flip P; then the
  chain samples ``exp(-H/kT)`` exactly for any step size.

Bounded coordinates (a cosine in [-1, 1], a bond angle in [0, pi]) are
reflected with their momentum flipped; periodic ones (dihedrals) are wrapped
to (-pi, pi].  Walkers whose state becomes non-finite, whose energy jumps by
more than ``blowup_kT`` kT in one step, or whose fixed-point solve fails are
re-seeded (fresh position from their start or from a healthy walker, fresh
momentum) and counted.

Units: Q in its own units (nm, rad, 1), P conjugate to Q, time ps, energies
kJ/mol, ``kT`` in kJ/mol.  ``gamma``: amu/ps (coordinate friction; the
friction rates are ``gamma`` times the eigenvalues of A) or 1/ps (atomic).

Costs per step: one batched evaluation of V and grad V and of A and dA/dQ at
the new position (re-used by the next step), plus one evaluation of A alone
inside the position fixed point (and a second for the few walkers not yet
converged), and the friction step: 5-7 products with A at the usual frictions,
or one eigen-decomposition of A (in closed form for up to 3 coordinates,
:mod:`latentlab.dynamics.eigen`).  A tabulated A (a periodic B-spline table)
keeps each walker's table cell from the position solve's first lookup: the
further iterates and A, dA/dQ at the new position are taken on it, without
finding and gathering cells again (:class:`latentlab.interpolation.TableCells`).
The step's arithmetic on the walkers' small matrices keeps the walkers on the
last axis (see :func:`walkers_last`); the two implicit solves and the friction
series, about 200 small operations on temporaries, run in inference mode.

References
----------
Leimkuhler & Matthews, Molecular Dynamics (Springer 2015): splitting methods, exact OU step.
Girolami & Calderhead, J. R. Stat. Soc. B 73, 123 (2011): generalized leapfrog for RMHMC.
Horowitz, Phys. Lett. B 268, 247 (1991): generalised hybrid Monte Carlo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from latentlab.conventions import logdet_coefficient
from latentlab.dynamics import ou_series
from latentlab.dynamics.eigen import symmetric_eigh
from latentlab.units import FRICTION_UNITS
from latentlab.validation import as_tensor, check_finite, check_nonnegative, check_positive, fail

Potential = Callable[[torch.Tensor], torch.Tensor]  # (W, N) -> (W,)
MassFunction = Callable[[torch.Tensor], torch.Tensor]  # (W, N) -> (W, N, N)

#: The half kick's Newton step is taken where ``|X| = h/2 |dA/dQ . P|`` is below this (2-14 Neumann terms).
X_LIMIT = 0.25


def latent_potential(pmf: Potential, effective_mass: MassFunction, kT: float, convention: str = "consistent") -> Potential:
    """``V(Q) = A_pmf(Q) + c kT ln det A(Q)`` for a named convention (see :mod:`latentlab.conventions`).

    Parameters
    ----------
    pmf : callable, (n_walkers, n_cg) -> (n_walkers,), kJ/mol
    effective_mass : callable, (n_walkers, n_cg) -> (n_walkers, n_cg, n_cg)
    kT : float, kJ/mol
    convention : {"consistent", "eq9", "pmf"}
    """
    c = logdet_coefficient(convention)
    check_positive(kT, "kT", "kJ/mol")
    if c == 0.0:
        return pmf

    def potential(Q):
        return pmf(Q) + c * kT * torch.logdet(effective_mass(Q))

    return potential


def check_friction_model(name: str) -> str:
    """``name`` if it is a friction model (``"coordinate"`` or ``"atomic"``), else a clear error."""
    if name not in FRICTION_UNITS:
        fail("friction_model", f"got {name!r}", "use 'coordinate' (gamma in amu/ps, friction -gamma dQ/dt) or "
             "'atomic' (gamma in 1/ps, the same collision rate on every atom)")
    return name


def half_quadratic(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``1/2 P^T A P`` per walker, ``(W,)``, for ``p (W, N)`` and ``a (W, N, N)``."""
    return 0.5 * torch.bmm(p[:, None, :], torch.bmm(a, p[:, :, None]))[:, 0, 0]


# The step's own arithmetic keeps the walkers last (vectors (N, W), matrices (N, N, W), dA (N N, N, W)): a
# batch of 2x2 or 3x3 products is then a multiply-add vectorised over the walkers, 2-5x faster on a CPU than
# ``bmm`` and broadcasts over (W, N, N) (about 20 ns per walker and product there), and as fast on a GPU.
def walkers_last(x: torch.Tensor) -> torch.Tensor:
    """``x (W, ...)`` with the walker axis moved last, contiguous."""
    return x.movedim(0, -1).contiguous()


def matvec(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``A P`` for ``a (N, N, W)`` and ``p (N, W)``, walkers last."""
    return (a * p[None]).sum(1)


def half_quadratic_last(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``1/2 P^T A P`` per walker, ``(W,)``, for ``p (N, W)`` and ``a (N, N, W)`` (walkers last)."""
    return 0.5 * (matvec(a, p) * p).sum(0)


def quadratic_gradient(p: torch.Tensor, da: torch.Tensor) -> torch.Tensor:
    """``grad_Q (P^T A P)_k = sum_ij dA_ij/dQ_k P_i P_j``, ``(N, W)``, for ``p (N, W)`` and ``da (N N, N, W)``."""
    n, w = p.shape
    return (da * (p[:, None] * p[None]).reshape(n * n, 1, w)).sum(0)


@dataclass
class LangevinState:
    """State of a batch of walkers and the quantities cached at its positions.

    Attributes
    ----------
    Q : torch.Tensor, shape=(n_walkers, n_cg)
    P : torch.Tensor, shape=(n_walkers, n_cg)
    V, grad_V : (n_walkers,), (n_walkers, n_cg)
    A, dA : (n_walkers, n_cg, n_cg), (n_walkers, n_cg, n_cg, n_cg) with ``dA[w, i, j, k] = dA_ij / dQ_k``
    eigvals, eigvecs : eigen-decomposition of A (for the friction step), or None where the step did not need it
    start : (n_walkers, n_cg)
        Where each walker started (used for re-seeding).
    """

    Q: torch.Tensor
    P: torch.Tensor
    V: torch.Tensor
    grad_V: torch.Tensor
    A: torch.Tensor
    dA: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    start: torch.Tensor
    step: int = 0
    #: ``(step, walker)`` of every re-seed: the walker's trajectory restarts after that step.
    restarts: list = field(default_factory=list)
    counters: dict = field(default_factory=lambda: {"steps": 0, "proposals": 0, "accepted": 0, "reseeded": 0,
                                                    "not_converged": 0, "reflections": 0})
    #: ``(P, A, their versions, 1/2 P^T A P)`` as the friction step left it (valid while P and A are unchanged).
    kinetic_cache: tuple | None = field(default=None, repr=False)
    #: ``(A, dA, their versions, A (N, N, W), dA (N N, N, W))``: A and dA with the walkers last, for the step.
    walkers_last_cache: tuple | None = field(default=None, repr=False)

    @property
    def n_walkers(self) -> int:
        return self.Q.shape[0]

    def walkers_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``(N, N, W)`` and dA ``(N N, N, W)`` with the walkers last (kept while A and dA are unchanged)."""
        c = self.walkers_last_cache
        if c is not None and c[0] is self.A and c[1] is self.dA and c[2] == (self.A._version, self.dA._version):
            return c[3], c[4]
        w, n = self.Q.shape
        a, da = walkers_last(self.A), walkers_last(self.dA).view(n * n, n, w)
        self.walkers_last_cache = (self.A, self.dA, (self.A._version, self.dA._version), a, da)
        return a, da

    def kinetic_energy(self) -> torch.Tensor:
        """``1/2 P^T A P`` per walker, ``(n_walkers,)`` kJ/mol."""
        c = self.kinetic_cache
        if c is not None and c[0] is self.P and c[1] is self.A and c[2] == (self.P._version, self.A._version):
            return c[3]
        return half_quadratic(self.P, self.A)

    def hamiltonian(self) -> torch.Tensor:
        """``H = 1/2 P^T A P + V`` per walker, ``(n_walkers,)`` kJ/mol."""
        return self.kinetic_energy() + self.V

    def take(self, accept: torch.Tensor | None, Q, V, grad_V, A, dA, eigvals, eigvecs, last=None) -> None:
        """Move the walkers where ``accept`` (``(n_walkers,)`` bool; None: all of them) to the new position
        and its cached quantities (shapes as the attributes; ``last``: the new A and dA walkers last, if
        known).  P is the caller's."""
        if accept is None:  # the common case: no masking needed
            self.Q, self.V, self.grad_V, self.A, self.dA = Q, V, grad_V, A, dA
            self.eigvals, self.eigvecs = eigvals, eigvecs
            if last is not None:
                self.walkers_last_cache = (A, dA, (A._version, dA._version)) + tuple(last)
            return
        m1, m2 = accept[:, None], accept[:, None, None]
        self.Q = torch.where(m1, Q, self.Q)
        self.V = torch.where(accept, V, self.V)
        self.grad_V = torch.where(m1, grad_V, self.grad_V)
        self.A = torch.where(m2, A, self.A)
        self.dA = torch.where(accept[:, None, None, None], dA, self.dA)
        if eigvals is None or self.eigvals is None:  # one side has none: recomputed when a step needs them
            self.eigvals = self.eigvecs = None
        else:
            self.eigvals = torch.where(m1, eigvals, self.eigvals)
            self.eigvecs = torch.where(m2, eigvecs, self.eigvecs)


class LatentLangevin:
    """Batched Langevin sampler for ``H = 1/2 P^T A(Q) P + V(Q)``.

    Parameters
    ----------
    potential : callable, (n_walkers, n_cg) -> (n_walkers,), kJ/mol
        V(Q), a torch function (a trained network or a closed form). Use
        :meth:`from_pmf` to build it from a potential of mean force and a convention.
    effective_mass : callable, (n_walkers, n_cg) -> (n_walkers, n_cg, n_cg)
        A(Q), symmetric positive definite; written with batched torch ops
        (its Q-derivative is taken with ``torch.func.jacfwd`` under ``vmap``).
    kT : float, kJ/mol
    dt : float, ps
    gamma : float, amu/ps ("coordinate") or 1/ps ("atomic")
        Friction; 0 gives Hamiltonian dynamics (for energy-drift checks).
    friction_model : {"coordinate", "atomic"}
        ``G = gamma I`` or ``G = gamma A(Q)^-1`` (see the module docstring).
    periodic : sequence of bool, optional
        Coordinates wrapped to (-pi, pi].
    bounds : sequence of (lo, hi) or None, optional
        Coordinates reflected at these walls (infinite bounds are ignored).
    metropolis : bool
        Accept/reject each Hamiltonian step (exact for any dt).
    max_iterations : int
        Fixed-point iterations per implicit half-step.
    tolerance : float
        Relative tolerance of the fixed-point solves: default 1e-8 in float64 (100 eps in float32), far below
        the integrator's own local error at usual steps.  A solve stops when the estimated error of its
        iterate (the last change times ``r / (1 - r)``, ``r`` the contraction rate measured from the last two
        changes, or bounded a priori from dA/dQ for the position's first iterate) is below it; each
        iteration gains about two digits, so a tighter value costs one more A evaluation per two digits.
    blowup_kT : float
        A walker whose H changes by more than this many kT in one step is re-seeded.
    device, dtype : torch device and floating dtype of the walkers.
    seed : int, optional
        Seed of the sampler's own random generator.
    """

    #: Name of these dynamics (``Simulation(dynamics=...)``); the momenta carry dynamics here.
    dynamics = "langevin"

    def __init__(self, potential: Potential, effective_mass: MassFunction, kT: float, dt: float, gamma: float,
                 periodic: Sequence[bool] | None = None, bounds: Sequence | None = None, metropolis: bool = False,
                 max_iterations: int = 20, tolerance: float | None = None, blowup_kT: float = 1000.0,
                 device=None, dtype=torch.float64, seed: int | None = None, friction_model: str = "coordinate"):
        self.potential = potential
        self.effective_mass = effective_mass
        self.kT = check_positive(kT, "kT", "kJ/mol")
        self.dt = check_positive(dt, "dt", "ps")
        self.friction_model = check_friction_model(friction_model)
        self.gamma = check_nonnegative(gamma, "gamma", FRICTION_UNITS[self.friction_model])
        self.metropolis = bool(metropolis)
        if int(max_iterations) < 1:
            fail("max_iterations", f"got {max_iterations}", "use at least 1 fixed-point iteration")
        self.max_iterations = int(max_iterations)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        # Fixed points to 1e-8 in float64 (reversible far below the integrator's own error), 100 eps in float32.
        self.tolerance = float(tolerance) if tolerance is not None else max(100 * torch.finfo(dtype).eps, 1e-8)
        self.blowup_kT = check_positive(blowup_kT, "blowup_kT")
        self._periodic = periodic
        self._bounds = bounds
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else torch.seed() % (2**63))
        self._rotated = None  # (P, U, U^T P) of the last step's energy check
        self._terms = None  # (A, its version, number of series terms or None) of the last friction decision


    @classmethod
    def from_pmf(cls, pmf: Potential, effective_mass: MassFunction, kT: float, convention: str = "consistent",
                 **kwargs) -> "LatentLangevin":
        """Sampler whose V is built from a potential of mean force by :func:`latent_potential`."""
        return cls(latent_potential(pmf, effective_mass, kT, convention), effective_mass, kT, **kwargs)

    # ------------------------------------------------------------------ set-up
    def _masks(self, n_cg: int):
        per = [False] * n_cg if self._periodic is None else [bool(p) for p in self._periodic]
        bnd = [None] * n_cg if self._bounds is None else list(self._bounds)
        if len(per) != n_cg:
            fail("periodic", f"has {len(per)} entries for {n_cg} coordinates", "give one flag per CG coordinate")
        if len(bnd) != n_cg:
            fail("bounds", f"has {len(bnd)} entries for {n_cg} coordinates", "give one (lo, hi) or None per coordinate")
        lo = torch.full((n_cg,), -math.inf, dtype=self.dtype, device=self.device)
        hi = torch.full((n_cg,), math.inf, dtype=self.dtype, device=self.device)
        for i, b in enumerate(bnd):
            if b is not None and not per[i]:
                lo[i], hi[i] = float(b[0]), float(b[1])
                if not lo[i] < hi[i]:
                    fail("bounds", f"coordinate {i} has lo >= hi ({b})", "give lo < hi")
        return torch.tensor(per, device=self.device), lo, hi

    def init(self, Q0, n_walkers: int | None = None) -> LangevinState:
        """Start walkers at ``Q0`` with momenta drawn from ``N(0, kT A(Q)^-1)``.

        Parameters
        ----------
        Q0 : array, shape=(n_walkers, n_cg) or (n_cg,)
            Starting points; a single point is repeated ``n_walkers`` times.
        """
        q = as_tensor(Q0, "Q0", dtype=self.dtype, device=self.device)
        if q.dim() == 1:
            q = q[None].expand(int(n_walkers or 1), -1).clone()
        if q.dim() != 2:
            fail("Q0", f"has shape {tuple(q.shape)}, expected (n_walkers, n_cg) or (n_cg,)", "pass CG coordinates")
        check_finite(q, "Q0")
        self.periodic, self.lo, self.hi = self._masks(q.shape[1])
        self._bounded = bool((torch.isfinite(self.lo) | torch.isfinite(self.hi)).any())
        self._any_periodic = bool(self.periodic.any())
        self._all_periodic = bool(self.periodic.all())
        two_pi = torch.tensor(2 * math.pi, dtype=self.dtype)
        self._below_two_pi = float(torch.nextafter(two_pi, torch.zeros_like(two_pi)))
        self._mirror_lo, self._mirror_hi = 2 * self.lo, 2 * self.hi  # reflection q -> 2 lo - q, 2 hi - q
        outside = ((q < self.lo) | (q > self.hi)).any(1)
        if bool(outside.any()):
            fail("Q0", f"walkers {torch.nonzero(outside).flatten().tolist()[:5]} start outside the coordinate bounds",
                 "start inside the bounds (e.g. |cos| < 1)")
        q = self._wrap(q)
        v, gv, a, da = self._evaluate(q)
        if not bool(torch.isfinite(v).all() & torch.isfinite(gv).all() & torch.isfinite(a).all()):
            fail("Q0", "V, grad V or A is not finite at the starting points", "start where the potential is defined")
        try:
            w, u = symmetric_eigh(a)
        except RuntimeError:
            fail("effective_mass", "A(Q0) could not be diagonalised", "check that A is symmetric positive definite")
        if not bool((w.amin(1) > 0).all()):
            fail("effective_mass", "A(Q0) is not positive definite", "check the map (rank-deficient?) or the starting point")
        state = LangevinState(q, torch.zeros_like(q), v, gv, a, da, w, u, q.clone())
        state.P = self._momenta(state.eigvals, state.eigvecs)
        return state

    # ------------------------------------------------------------------ pieces
    def mass_and_derivative(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A (W, N, N)`` and ``dA_ij/dQ_k`` of shape ``(W, N, N, N)``, exact.

        Mass models (:class:`latentlab.maps.MassModel`) give both in one call (analytically where they can);
        any other callable A is differentiated by forward-mode AD.
        """
        both = getattr(self.effective_mass, "value_and_derivative", None)
        if both is None:
            from latentlab.maps.mass_model import MassModel

            return MassModel.value_and_derivative(self.effective_mass, q)
        return both(q)

    def _evaluate(self, q: torch.Tensor, near=None):
        """V, grad V, A, dA/dQ at ``q (W, N)``: the one expensive evaluation per step.

        A potential with ``energy_and_gradient(Q) -> (V, grad V)`` (the library's potentials) supplies both;
        any other callable V is differentiated by autograd.  ``near``: ``(q unwrapped, cells)``, the table cells
        of a tabulated A found by the position solve (:class:`latentlab.interpolation.TableCells`), so that A and
        dA/dQ at q are taken without finding the cells again.
        """
        both = getattr(self.potential, "energy_and_gradient", None)
        if both is not None:
            v, gv = both(q)
        else:
            with torch.enable_grad():
                qr = q.detach().requires_grad_(True)
                v = self.potential(qr)
                gv = torch.autograd.grad(v.sum(), qr)[0] if v.requires_grad else torch.zeros_like(qr)  # flat V
        if v.shape != (q.shape[0],):
            fail("potential", f"returned shape {tuple(v.shape)}, expected ({q.shape[0]},)", "return one energy per walker")
        a, da = self.mass_and_derivative(q) if near is None else self.effective_mass.value_and_derivative(*near)
        return v.detach(), gv.detach(), a.detach(), da.detach()

    def _momenta(self, w, u):
        xi = torch.randn(w.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        return torch.einsum("wij,wj->wi", u, xi * torch.sqrt(self.kT / w))

    def _series_terms(self, a: torch.Tensor, t: float) -> int | None:
        """Terms of the friction step's power series (:mod:`latentlab.dynamics.ou_series`) at ``A = a``
        (``(N, N, W)``, walkers last) over a time ``t``, or None when the eigen-decomposition is used instead
        (atomic friction, or ``gamma t |A| > 1``)."""
        if self.friction_model != "coordinate" or self.gamma == 0.0:
            return None
        cached = self._terms
        if cached is not None and cached[0] is a and cached[1] == (a._version, t):
            return cached[2]
        with torch.inference_mode():
            n = ou_series.series_terms(self.gamma * t * ou_series.norm_bound(a))
        self._terms = (a, (a._version, t), n)
        return n

    def _friction(self, state: LangevinState, t: float) -> None:
        """Exact OU update of P over time t at fixed Q (the power series where it converges fast)."""
        if self.gamma == 0.0:
            return
        a_last = state.walkers_last()[0] if self.friction_model == "coordinate" else None
        n_terms = None if a_last is None else self._series_terms(a_last, t)
        if n_terms is not None:
            # float32 normals (5x cheaper to draw than float64 on a CPU; 24-bit variates are ample for the noise),
            # drawn (W, N) as by the eigenbasis path
            xi = torch.randn(state.P.shape, generator=self.generator, device=self.device, dtype=torch.float32)
            with torch.inference_mode():  # temporaries only (see _hamiltonian_step)
                p = ou_series.ou_step(a_last, state.P.T, xi.to(self.dtype).T, self.gamma * t, self.kT, n_terms)  # (N, W)
                kinetic = half_quadratic_last(p, a_last)
            p = p.clone()  # an ordinary tensor: the state keeps it
            state.P, self._rotated = p.T, None
            state.kinetic_cache = (state.P, state.A, (state.P._version, state.A._version), kinetic)
            return
        if state.eigvals is None:
            state.eigvals, state.eigvecs = symmetric_eigh(state.A)
        decay, noise, half_w = self._ou_coefficients(state.eigvals, t)  # (W, N, 1) each
        u = state.eigvecs
        # float32 normals (5x cheaper to draw than float64 on a CPU; 24-bit variates are ample for the noise)
        xi = torch.randn(decay.shape, generator=self.generator, device=self.device, dtype=torch.float32).to(self.dtype)
        rotated = self._rotated  # U^T P as the step's energy check computed it, when P and U are still those
        if rotated is not None and rotated[0] is state.P and rotated[1] is u:
            pu = rotated[2]
        else:
            pu = torch.bmm(u.transpose(1, 2), state.P[:, :, None])
        self._rotated = None
        y = torch.addcmul(decay * pu, noise, xi)  # the new U^T P
        state.P = torch.bmm(u, y)[..., 0]
        # 1/2 P^T A P = 1/2 sum_i w_i y_i^2 in the eigenbasis, kept for the step's H and the reporters
        kinetic = torch.bmm(y.transpose(1, 2), half_w * y)[:, 0, 0]
        state.kinetic_cache = (state.P, state.A, (state.P._version, state.A._version), kinetic)

    def _ou_coefficients(self, w: torch.Tensor, t: float):
        """``exp(-r t)``, ``sqrt(kT (1 - exp(-2 r t)) / w)`` and ``w / 2``, each ``(W, N, 1)``, for the
        eigenvalues ``w (W, N)`` and the relaxation rates ``r = gamma w`` (coordinate) or ``gamma`` (atomic)."""
        w3, rate = w[:, :, None], self.gamma * t
        decay = w3 * rate if self.friction_model == "coordinate" else torch.full_like(w3, rate)  # r t
        return torch.exp(-decay), torch.sqrt(torch.expm1(decay * -2.0).mul_(-self.kT) / w3), 0.5 * w3

    def _wrap(self, q, exact: bool = True):
        """Periodic coordinates to (-pi, pi] (``exact=False``: [-pi, pi), enough for evaluating A)."""
        if self._any_periodic:
            if exact:  # pi - ((pi - q) mod 2 pi), the remainder kept below 2 pi (where rounding can take it)
                wrapped = math.pi - torch.remainder(math.pi - q, 2 * math.pi).clamp_(max=self._below_two_pi)
            else:
                wrapped = torch.remainder(q + math.pi, 2 * math.pi) - math.pi
            q = wrapped if self._all_periodic else torch.where(self.periodic, wrapped, q)
        return q

    def _reflect(self, q, flips: bool = True):
        """Reflect into [lo, hi]; returns the new q and (``flips``) a mask of coordinates whose momentum flips."""
        new = torch.minimum(torch.maximum(q, self._mirror_lo - q), self._mirror_hi - q)  # inf bounds: no change
        return new, ((q < self.lo) | (q > self.hi)) if flips else None

    @staticmethod
    def _error(change, previous, rate=None):
        """Estimated relative error of the latest fixed-point iterate per walker, ``(W,)``.

        For a contraction with rate ``r`` the iterate is within ``change r / (1 - r)`` of the fixed point;
        with ``r = change / previous`` (the last two changes) that is ``change^2 / (previous - change)``.
        Without a previous change, ``rate`` (an a-priori bound per walker) stands for ``r``.  Where the
        rate is above 1/2 or unknown, the change itself is the estimate, the usual criterion.
        """
        if previous is None:
            if rate is None:
                return change
            return torch.where(rate <= 0.5, change * rate / (1.0 - rate), change)
        gap = previous - change
        return torch.where(gap > change, change * change / gap, change)

    def _solve(self, update, x, tol, before=None, rate=None):
        """Iterate ``x <- update(x)`` (``x (N, W)``, walkers last) until the estimated error (:meth:`_error`) of
        every walker is at most ``tol``, or ``max_iterations``; returns ``x`` and the per-walker error ``(W,)``.

        ``update(x, idx)`` is the map at the walkers ``idx`` (a long tensor; None: all of them).  While more
        than a quarter of the walkers still move, an iteration moves all of them; after that only those not
        yet converged (usually a few per cent), so a solve costs about one batched iteration beyond what
        every walker needs.  ``before``: the iterate that gave ``x`` (so the first change already has a rate);
        ``rate``: an a-priori rate per walker ``(W,)`` for the first iterate.  Changes are relative to the size of
        ``x`` (``1 + max |x_i|``, which the iterations change by far less than a per cent).  Walkers whose
        iterates are not finite stop iterating with a NaN error (the caller re-seeds them).
        """
        n_walkers = x.shape[1]
        inv_scale = 1.0 / (1.0 + x.abs().amax(0))
        previous = None if before is None else (x - before).abs().amax(0).mul_(inv_scale)
        idx, xs, error = None, x, None
        for _ in range(self.max_iterations):
            new = update(xs, idx)
            change = (new - xs).abs().amax(0).mul_(inv_scale)  # NaN for a walker gone bad: it stops here
            if previous is not None:
                err = self._error(change, previous)
            else:
                err = change if rate is None else self._error(change, None, rate)
            if idx is None:
                x, error = new, err
            else:
                x.index_copy_(1, idx, new)
                error.index_copy_(0, idx, err)
            active = torch.nonzero(err > tol).flatten()
            if active.numel() == 0:
                break
            if idx is None and 4 * active.numel() > n_walkers:  # most still move: all of them, no gathering
                xs, previous = new, change
                continue
            idx = active if idx is None else idx[active]
            xs, previous, inv_scale = new[:, active], change[active], inv_scale[active]
        return x, error

    def _half_kick(self, p0: torch.Tensor, base: torch.Tensor, da: torch.Tensor):
        """Solve the implicit half kick ``P = base - h/4 grad_Q (P^T A P)`` (walkers last: ``p0``, ``base`` (N, W),
        ``da`` (N N, N, W)); returns ``P``, which walkers converged to the tolerance (``(W,)`` bool, or None when
        all of them did) and ``-X^T`` (``(N, N, W)``, below): minus the position map's Jacobian
        ``h/2 sum_j dA_ij/dQ_k P_j`` at Q.

        The equation is quadratic in P: ``R(P) = P - base + h/4 D(P, P) = 0`` with ``D(P, P)_k = sum_ij dA_ij/dQ_k
        P_i P_j``.  After one fixed-point iterate ``P1`` from ``p0``, one Newton step ``P2 = P1 - delta``,
        ``(I + X) delta = R(P1)`` with ``X_kl = h/2 sum_i dA_il/dQ_k P1_i``, leaves exactly ``R(P2) = h/4 D(delta,
        delta)``, so P2 is within ``h/4 c |delta|^2 / (1 - |X|)`` of the solution (``c = max_k sum_ij |dA_ij/dQ_k|``,
        ``|X| <= h/2 c |P1|``, a few hundredths): some 1e-12, where fixed-point iteration needs three iterates for
        1e-8.  ``delta`` is summed as the Neumann series ``sum_m (-X)^m R`` to within the tolerance (2-4 terms).
        The bounds are checked first over all walkers at once (one synchronisation); where they do not hold, per
        walker, and the walkers whose own bound fails (a steep A, huge momenta, ``|X| >= X_LIMIT``) are solved
        by fixed-point iteration from ``p0`` (and their ``X`` is taken at their solution).
        """
        h, tol = self.dt, self.tolerance
        n, w = p0.shape

        def kick(p, idx=None):
            b, d = (base, da) if idx is None else (base[:, idx], da[..., idx])
            return torch.add(b, quadratic_gradient(p, d), alpha=-0.25 * h)

        p1 = kick(p0)
        xt = (da.view(n, n, n, w) * p1[:, None, None]).sum(0).mul_(-0.5 * h)  # -X^T: [l, k] = -X_kl
        # R(P1) = P1 - base + h/4 D(P1, P1), with D(P1, P1)_k = sum_l (2/h) X_kl P1_l: (N, W)
        residual = torch.add(p1 - base, (xt * p1[:, None]).sum(0), alpha=-0.5)
        c = da.abs().sum(0).amax(0)  # (W,)
        p_size = p1.abs().amax(0)
        x = c * p_size  # >= |X| (max-row-sum norm) per walker, times 2 / h
        scale = p_size.add_(1.0)  # errors are relative to 1 + |P|
        residual_size = residual.abs().amax(0)
        r = residual_size / scale
        # the Newton error relative to 1 + |P|, h/4 c (1 + |P|) |delta|^2 / (1 - |X|) with |delta| <= |R| / (1 - |X|),
        # per walker but for the 1 / (1 - |X|)^3 (taken with the largest |X|); here times 4 / h
        newton = (residual_size * residual_size).mul_(c).div_(scale)
        x_max, r_max, newton_max = torch.stack([x, r, newton]).amax(1).tolist()
        x_max, newton_max = 0.5 * h * x_max, 0.25 * h * newton_max
        bad = None
        if not (x_max < X_LIMIT and newton_max <= 0.5 * tol * (1.0 - x_max) ** 3):
            # per walker: the Newton step where its own bound holds, fixed-point iteration for the others
            # (a walker near a singular A, say, must not hold the others back)
            x, newton = x * (0.5 * h), newton * (0.25 * h)
            ok = (x < X_LIMIT) & (newton <= (0.5 * tol) * (1.0 - x.clamp(max=X_LIMIT)) ** 3)
            x_max, r_max = torch.stack([torch.where(ok, x, 0.0), torch.where(ok, r, 0.0)]).amax(1).tolist()
            bad = torch.nonzero(~ok).flatten()
        floor = 0.5 * tol * (1.0 - x_max)  # Neumann terms: |X|^m |R| / (1 - |X|) <= tol / 2
        terms = 1 if r_max <= floor or x_max <= 0.0 else math.ceil(math.log(floor / r_max) / math.log(x_max))
        term = delta = residual
        for _ in range(terms - 1):
            term = (xt * term[:, None]).sum(0)  # (-X) term
            delta = delta + term
        p = p1 - delta
        converged = None  # all of them
        if bad is not None and bad.numel():
            converged = torch.ones(w, dtype=torch.bool, device=p0.device)
            start = p0[:, bad]

            def kick_bad(q, idx=None):
                return kick(q, bad if idx is None else bad[idx])

            p_bad, error = self._solve(kick_bad, kick_bad(start), tol, before=start)
            p[:, bad] = p_bad
            converged[bad] = error <= 10 * tol
            xt[..., bad] = (da[..., bad].view(n, n, n, -1) * p_bad[:, None, None]).sum(0).mul_(-0.5 * h)
        return p, converged, xt

    def _hamiltonian_step(self, state: LangevinState):
        """One implicit generalized-leapfrog step from the state; returns the new ``Q (W, N)``, ``P (N, W)``
        (walkers last), V, grad V, A, dA at the new Q, A and dA walkers last, and which walkers converged."""
        h = self.dt
        w, n = state.Q.shape
        a0, da0 = state.walkers_last()  # (N, N, W), (N N, N, W)
        # the two implicit solves make temporaries only, about 150 small operations: in inference mode each skips
        # autograd's bookkeeping (version counters, view tracking), about 3 % of the step
        with torch.inference_mode():
            q1, p_half, converged, cells = self._implicit_half_steps(state, a0, da0)
            near = None if cells is None else (q1, cells)  # Q1 unwrapped, a continuous move from the cells' points
            if self._bounded:
                q1, flip = self._reflect(q1)
                if bool(flip.any()):
                    p_half = torch.where(flip.T, -p_half, p_half)
                    state.counters["reflections"] += int(flip.any(1).sum())
            q1 = self._wrap(q1)
        q1 = q1.clone(memory_format=torch.contiguous_format)  # (W, N), an ordinary tensor (the state keeps it)
        # (3) explicit half kick at Q1 (the step's one full evaluation)
        v1, gv1, a1, da1 = self._evaluate(q1, near)
        last = walkers_last(a1), walkers_last(da1).view(n * n, n, w)
        p1 = torch.add(torch.add(p_half, gv1.T, alpha=-0.5 * h), quadratic_gradient(p_half, last[1]), alpha=-0.25 * h)
        return q1, p1, v1, gv1, a1, da1, last, converged

    def _implicit_half_steps(self, state: LangevinState, a0: torch.Tensor, da0: torch.Tensor):
        """The implicit half kick and the implicit drift from the state (``a0 (N, N, W)``, ``da0 (N N, N, W)``: A and
        dA at Q, walkers last); returns ``Q1 (W, N)`` before walls and wrapping (a view), ``P_half (N, W)``, which
        walkers converged ``(W,)`` and, for a tabulated A, the walkers' table cells near Q1 (else None)."""
        h, tol = self.dt, self.tolerance
        w, n = state.Q.shape
        p0 = state.P.T.contiguous()  # (N, W): no copy when P came from the friction step
        # (1) implicit half kick: P_half = P - h/2 [grad V(Q) + 1/2 grad_Q P_half^T A(Q) P_half]
        p_half, converged, minus_jac = self._half_kick(p0, torch.add(p0, state.grad_V.T, alpha=-0.5 * h), da0)
        # (2) implicit drift: Q1 = Q + h/2 [A(Q) + A(Q1)] P_half
        a0p = matvec(a0, p_half)  # (N, W)
        half_drift = torch.add(state.Q.T, a0p, alpha=0.5 * h)  # Q + h/2 A(Q) P_half
        # predictor: A(Q1) ~ A(Q) + dA.(Q1 - Q) with Q1 - Q ~ h A P, an error O(h^2) smaller than A(Q) alone;
        # h/2 (dA.(h A P)) P_half = -h (-X^T) (A P), with the kick's -X^T (at P1, within 0.2 % of P_half)
        q1 = torch.add(torch.add(half_drift, a0p, alpha=0.5 * h), matvec(minus_jac, a0p), alpha=-h)
        ph = p_half.T.contiguous()[:, :, None]  # (W, N, 1), for the A(Q) the mass model returns
        bounded = self._bounded
        wrap = self._any_periodic and not getattr(self.effective_mass, "periodic_safe", False)
        # a tabulated A keeps each walker's table cell from the first iterate, for A at the further iterates and A,
        # dA/dQ at Q1 (within 0.01 of a cell of it) without finding the cells again (TableCells); not where walls
        # reflect Q1 or A needs wrapped points
        with_cells = None if bounded or wrap else getattr(self.effective_mass, "value_and_cells", None)
        kept = []

        def drift(q, idx=None):
            qa = self._reflect(q.T, flips=False)[0] if bounded else q.T
            qa = self._wrap(qa, exact=False) if wrap else qa
            c, p = (half_drift, ph) if idx is None else (half_drift[:, idx], ph[idx])
            if with_cells is not None and idx is None:  # every walker: its cell is found and kept
                a, cells = with_cells(qa)
                kept[:] = [cells]
            elif with_cells is not None and kept[0] is not None:  # a few walkers' further iterates, on their cells
                a = kept[0].values(qa, idx)
            else:
                a = self.effective_mass(qa)
            # c + h/2 A(q) P in one product, walkers first; returned as its (N, W) view
            return torch.baddbmm(c.T[:, :, None], a, p, alpha=0.5 * h)[..., 0].T

        # a-priori contraction rate of the drift map: its Jacobian's max-row-sum norm at Q (from the kick, at its
        # first iterate P1: within 0.2 % of the norm at P_half in trained models), times 3 for the change of dA
        # between Q and Q1 (the observed rates of trained models are at most ~1.1x of the norm at Q)
        rate = minus_jac.abs().sum(1).amax(0).mul_(3.0)
        q1, error = self._solve(drift, q1, tol, rate=rate)
        converged = error <= 10 * tol if converged is None else converged & (error <= 10 * tol)
        return q1.T, p_half, converged, (kept[0] if kept else None)

    # ------------------------------------------------------------------ the step
    def step(self, state: LangevinState, n_steps: int = 1) -> LangevinState:
        """Advance all walkers by ``n_steps`` steps of ``H(h) O(h)`` in place (see the module docstring)."""
        for _ in range(int(n_steps)):
            h0 = state.hamiltonian()
            q1, p_last, v1, gv1, a1, da1, last, converged = self._hamiltonian_step(state)
            p1 = p_last.T  # (W, N), a view of the walkers-last momenta
            w1 = u1 = None
            series = self._series_terms(last[0], self.dt) is not None  # the friction step needs no eigen-decomposition
            if series and not self.metropolis:
                self._take_and_check_after_friction(state, h0, q1, p1, v1, gv1, a1, da1, last, converged)
                continue
            if series or a1.shape[-1] > 3:
                kinetic = half_quadratic_last(p_last, last[0])
            else:  # closed-form eigen-decomposition (NaN for a NaN A), then 1/2 P^T A P in its basis
                w1, u1 = symmetric_eigh(a1)
                pu1 = torch.bmm(u1.transpose(1, 2), p1[:, :, None])  # (W, N, 1), re-used by the friction step
                kinetic = torch.bmm(pu1.transpose(1, 2), (0.5 * w1)[:, :, None] * pu1)[:, 0, 0]
                self._rotated = (p1, u1, pu1)
            h1 = kinetic + v1
            # a NaN or inf in Q1, P1, V or A makes H1 NaN or inf: the energy check below fails for it
            finite = None
            if not series and a1.shape[-1] > 3:
                finite = torch.isfinite(h1)
                try:  # LAPACK may raise on a NaN A: those walkers get the old A
                    w1, u1 = symmetric_eigh(torch.where(finite[:, None, None], a1, state.A))
                except RuntimeError:  # a non-symmetric or NaN A slipped through: every walker is re-seeded
                    w1 = torch.ones_like(p1)
                    u1 = torch.eye(p1.shape[1], dtype=p1.dtype, device=p1.device).expand(p1.shape[0], -1, -1).clone()
                    finite &= False
            # positive definite: the eigenvalues where they were taken, else a non-negative 1/2 P^T A P
            definite = kinetic >= 0 if w1 is None else w1.amin(1) > 0
            healthy = ((h1 - h0).abs() <= self.blowup_kT * self.kT) & definite & converged
            if finite is not None:
                healthy &= finite
            accept = healthy
            if self.metropolis:
                log_u = torch.log(torch.rand(h0.shape, generator=self.generator, device=self.device, dtype=self.dtype))
                accept = healthy & (log_u <= -(h1 - h0) / self.kT)
                state.counters["proposals"] += state.n_walkers
                state.counters["accepted"] += int(accept.sum())
            if bool(accept.all()):
                state.P = p1
                state.take(None, q1, v1, gv1, a1, da1, w1, u1, last)
            else:
                reject = ~accept if self.metropolis else torch.zeros_like(accept)
                state.P = torch.where(accept[:, None], p1, torch.where(reject[:, None], -state.P, state.P))
                state.take(accept, q1, v1, gv1, a1, da1, w1, u1)
                sick = ~healthy
                state.counters["not_converged"] += int((~converged & torch.isfinite(h1)).sum())
                if bool(sick.any()):
                    self._reseed(state, sick)
            self._friction(state, self.dt)
            state.step += 1
            state.counters["steps"] += 1
        return state

    def _take_and_check_after_friction(self, state: LangevinState, h0, q1, p1, v1, gv1, a1, da1, last, converged):
        """The rest of a step without Metropolis whose friction step is the power series: every walker moves, the
        friction step follows, and the energy check compares H after it with H after the last one (the friction
        step's kinetic energy is computed anyway, and changes H by a few kT at most, against the ``blowup_kT``
        a sick walker is caught by).  Walkers that fail it (a non-finite or blown-up state, a non-converged solve,
        a negative kinetic energy) are then re-seeded with momenta from ``N(0, kT A^-1)``, the friction step's own
        stationary law."""
        state.P = p1
        state.take(None, q1, v1, gv1, a1, da1, None, None, last)
        self._friction(state, self.dt)
        kinetic = state.kinetic_energy()
        with torch.inference_mode():  # temporaries only
            h1 = kinetic + v1  # NaN or inf for a NaN or inf in Q1, P, V or A
            healthy = ((h1 - h0).abs() <= self.blowup_kT * self.kT) & (kinetic >= 0) & converged
        if not bool(healthy.all()):
            state.counters["not_converged"] += int((~converged & torch.isfinite(h1)).sum())
            self._reseed(state, ~healthy)
        state.step += 1
        state.counters["steps"] += 1

    def _reseed(self, state: LangevinState, sick: torch.Tensor) -> None:
        """Restart sick walkers at their start point with fresh momenta, and count them."""
        idx = torch.nonzero(sick).flatten()
        state.counters["reseeded"] += int(idx.numel())
        state.restarts.extend((state.step + 1, int(i)) for i in idx.tolist())  # (the step it restarts after, walker)
        q = state.start[idx]
        v, gv, a, da = self._evaluate(q)
        w, u = symmetric_eigh(a)
        # out of place: the state may hold what the model returned, e.g. a constant A expanded over the walkers
        at = (idx,)
        state.Q, state.V, state.grad_V = state.Q.index_put(at, q), state.V.index_put(at, v), state.grad_V.index_put(at, gv)
        state.A, state.dA = state.A.index_put(at, a), state.dA.index_put(at, da)
        if state.eigvals is not None:
            state.eigvals, state.eigvecs = state.eigvals.index_put(at, w), state.eigvecs.index_put(at, u)
        state.P = state.P.index_put(at, self._momenta(w, u))

    def diagnostics(self, state: LangevinState) -> dict:
        """Counters of a state: steps, re-seeded walker-steps (and their fraction), non-converged solves,
        reflections and the Metropolis acceptance rate (None without Metropolis)."""
        c = state.counters
        walker_steps = c["steps"] * state.n_walkers
        return {"steps": c["steps"], "reseeded": c["reseeded"], "not_converged": c["not_converged"],
                "reflections": c["reflections"],
                "reseeded_fraction": c["reseeded"] / walker_steps if walker_steps else 0.0,
                "acceptance_rate": (c["accepted"] / c["proposals"]) if c["proposals"] else None}
